"""Reconstruction tasks: a head on the decoder outputs of dropped constituents and a loss.

Every task has the same interface, `loss(decoded [M, D], csts [M, 7], ids [M]) -> scalar`, so
pre-training combines any of them by summing their weighted losses.
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

    def loss(self, decoded, csts, ids) -> torch.Tensor:
        raise NotImplementedError


class ParticleID(ReconstructionTask):
    """Linear head over the 8 particle IDs, cross-entropy (with label smoothing)."""

    def __init__(self, dim: int, weight: float = 1.0, label_smoothing: float = 0.0):
        super().__init__(weight)
        self.head = nn.Linear(dim, N_IDS)
        self.label_smoothing = label_smoothing

    def loss(self, decoded, csts, ids):
        return F.cross_entropy(self.head(decoded), ids, label_smoothing=self.label_smoothing)


class Regression(ReconstructionTask):
    """Linear head regressing the 7 preprocessed features, L1 loss."""

    def __init__(self, dim: int, weight: float = 1.0):
        super().__init__(weight)
        self.head = nn.Linear(dim, N_FEATURES)

    def loss(self, decoded, csts, ids):
        return F.l1_loss(self.head(decoded), csts)


class TokenClassification(ReconstructionTask):
    """Linear head over K tokens, cross-entropy against the token of the true features; the
    tokenizer maps [M, 7] features to [M] integer tokens (k-means, VQ-VAE)."""

    def __init__(self, dim: int, tokenizer: nn.Module, n_tokens: int, weight: float = 1.0):
        super().__init__(weight)
        self.tokenizer = tokenizer.requires_grad_(False)
        self.head = nn.Linear(dim, n_tokens)

    def loss(self, decoded, csts, ids):
        with torch.no_grad():
            tokens = self.tokenizer(csts)
        return F.cross_entropy(self.head(decoded), tokens)
