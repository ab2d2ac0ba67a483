"""Reconstruction tasks: a head on the decoder outputs of dropped constituents and a loss.

Every task has the same interface, `loss(decoded [M, D], batch, dropped [B, N]) -> scalar`:
`decoded` holds the decoder outputs of the M dropped constituents in the order of
`batch["csts"][dropped]`, and `batch` the whole jets, so a task may derive its targets from
the whole jet (a VQ-VAE tokenizer does). `batch["csts"]` holds the continuous features the
model reconstructs (all 7, or a subset for the Table 1 ablation: `n_features`). Pre-training
sums the tasks' weighted losses. Continuous tasks also `sample(decoded [M, D])` a
reconstruction [M, n_features] of the dropped constituents (paper appendix E).
"""

import torch
import torch.nn.functional as F
from torch import nn

from mpm.data import schema

N_FEATURES = len(schema.CONTINUOUS_FEATURES)
N_IDS = len(schema.PARTICLE_IDS)


class ReconstructionTask(nn.Module):
    def __init__(self, weight: float = 1.0):
        super().__init__()
        self.weight = weight

    def loss(self, decoded: torch.Tensor, batch: dict, dropped: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class ParticleID(ReconstructionTask):
    """Linear head over the 8 particle IDs, cross-entropy (with label smoothing)."""

    def __init__(self, dim: int, weight: float = 1.0, label_smoothing: float = 0.0):
        super().__init__(weight)
        self.head = nn.Linear(dim, N_IDS)
        self.label_smoothing = label_smoothing

    def loss(self, decoded, batch, dropped):
        ids = batch["csts_id"][dropped]
        return F.cross_entropy(self.head(decoded), ids, label_smoothing=self.label_smoothing)


class Regression(ReconstructionTask):
    """Linear head regressing the preprocessed features, L1 loss."""

    def __init__(self, dim: int, n_features: int = N_FEATURES, weight: float = 1.0):
        super().__init__(weight)
        self.head = nn.Linear(dim, n_features)

    def loss(self, decoded, batch, dropped):
        return F.l1_loss(self.head(decoded), batch["csts"][dropped])

    @torch.no_grad()
    def sample(self, decoded: torch.Tensor) -> torch.Tensor:
        return self.head(decoded)  # a point estimate: the L1 loss's median


class TokenClassification(ReconstructionTask):
    """Linear head over K tokens, cross-entropy against the true constituent's token. The
    tokenizer (k-means, VQ-VAE) maps whole jets, csts [B, N, 7] and mask [B, N], to tokens
    [B, N], so a VQ-VAE sees every constituent of the jet, not only the visible ones."""

    def __init__(self, dim: int, tokenizer: nn.Module, n_tokens: int, weight: float = 1.0):
        super().__init__(weight)
        self.tokenizer = tokenizer.requires_grad_(False)
        self.head = nn.Linear(dim, n_tokens)

    @torch.no_grad()
    def targets(self, batch: dict, dropped: torch.Tensor) -> torch.Tensor:
        """Tokens of the dropped constituents, computed in fp32 whatever the training step's
        autocast: in bf16 a nearest-centroid search among thousands of centroids picks
        another centroid for a few per cent of the constituents."""
        with torch.autocast(batch["csts"].device.type, enabled=False):
            return self.tokenizer(batch["csts"].float(), batch["mask"])[dropped]

    def loss(self, decoded, batch, dropped):
        return F.cross_entropy(self.head(decoded), self.targets(batch, dropped))

    @torch.no_grad()
    def sample(self, decoded: torch.Tensor) -> torch.Tensor:
        """A token drawn from the predicted distribution, decoded to its features (k-means:
        the centroid). A VQ-VAE token has no features of its own: its decoder needs the jet."""
        if not hasattr(self.tokenizer, "decode"):
            raise NotImplementedError(f"{type(self.tokenizer).__name__} tokens cannot be "
                                      "decoded one constituent at a time")  # fmt: skip
        tokens = torch.multinomial(self.head(decoded).softmax(-1), 1)[:, 0]
        return self.tokenizer.decode(tokens)
