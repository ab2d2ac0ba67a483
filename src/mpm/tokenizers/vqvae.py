"""VQ-VAE tokenizer of jets (MPMv1's targets; paper section 4.1).

A transformer encoder sees the whole jet (the preprocessed continuous features of every
constituent: all 7, or the set of `model.encoder.features`), projects each constituent to the
codebook dimension and quantises it with vector-quantize-pytorch (cosine similarity, k-means
initialisation, EMA codebook updates, dead-code replacement); a transformer decoder
reconstructs the jet from the quantised set.
A constituent's token is its codebook index, computed with the whole jet as context.
"""

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from vector_quantize_pytorch import VectorQuantize

from mpm.atomic import atomic_file
from mpm.data import schema
from mpm.errors import InputError
from mpm.models.layers import Transformer
from mpm.models.packing import Packing, pack

N_FEATURES = len(schema.CONTINUOUS_FEATURES)
FORMAT = "mpm-vqvae/1"


class VQVAE(nn.Module):
    def __init__(
        self,
        dim: int,
        depth: int,
        heads: int,
        codebook_size: int,
        codebook_dim: int,
        commitment_weight: float = 0.25,
        ema_decay: float = 0.99,
        dead_code_threshold: float = 1.0,
        n_features: int = N_FEATURES,
    ):
        super().__init__()
        self.n_features = n_features
        self.embed = nn.Linear(n_features, dim)
        self.encoder = Transformer(dim, depth, heads)
        self.to_code = nn.Linear(dim, codebook_dim)
        self.quantizer = VectorQuantize(
            dim=codebook_dim,
            codebook_size=codebook_size,
            use_cosine_sim=True,
            kmeans_init=True,
            decay=ema_decay,
            commitment_weight=commitment_weight,
            threshold_ema_dead_code=dead_code_threshold,
        )
        self.from_code = nn.Linear(codebook_dim, dim)
        self.decoder = Transformer(dim, depth, heads)
        self.out = nn.Linear(dim, n_features)

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    def _quantize(self, x, packing: Packing) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantised latents [M, codebook_dim], codes [M] and commitment loss of the M packed
        constituents x [M, n_features]; the quantizer sees them as one sequence."""
        latents = self.to_code(self.encoder(self.embed(x), packing))
        quantized, codes, commitment = self.quantizer(latents[None])
        return quantized[0], codes[0], commitment.sum()

    def forward(self, csts, mask) -> dict[str, torch.Tensor]:
        """Losses and codes of a batch: csts [B, N, n_features], mask [B, N] -> {"reconstruction",
        "commitment", "total", "codes" [M]}."""
        x, packing = pack(csts, mask)
        quantized, codes, commitment = self._quantize(x, packing)
        reconstruction = F.mse_loss(self.out(self.decoder(self.from_code(quantized), packing)), x)
        return {
            "reconstruction": reconstruction,
            "commitment": commitment,
            "total": reconstruction + commitment,
            "codes": codes,
        }

    @torch.no_grad()
    def tokenize(self, csts, mask) -> torch.Tensor:
        """Codebook index of every constituent [B, N] given its whole jet (0 at padding)."""
        _, codes, _ = self._quantize(*pack(csts, mask))
        tokens = torch.zeros(mask.shape, dtype=torch.long, device=mask.device)
        tokens[mask] = codes.long()
        return tokens


class VQVAETokenizer(nn.Module):
    """The tokenizer interface of the token tasks: csts [B, N, F], mask [B, N] -> [B, N]."""

    def __init__(self, vqvae: VQVAE):
        super().__init__()
        self.vqvae = vqvae.eval()

    @property
    def n_tokens(self) -> int:
        return self.vqvae.codebook_size

    @property
    def n_features(self) -> int:
        return self.vqvae.n_features

    def train(self, mode: bool = True):
        return super().train(False)  # frozen: no EMA codebook updates, no dead-code resets

    def forward(self, csts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.vqvae.tokenize(csts, mask)


def save_vqvae(vqvae: VQVAE, config: dict, path: Path) -> None:
    with atomic_file(path) as tmp:
        torch.save({"format": FORMAT, "config": config, "state": vqvae.state_dict()}, tmp)


def load_vqvae(path: str | Path) -> VQVAE:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: VQ-VAE tokenizer file not found")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        assert blob["format"] == FORMAT
        vqvae = VQVAE(**blob["config"])
        vqvae.load_state_dict(blob["state"])
    except Exception:
        raise InputError(f"{path}: not a VQ-VAE tokenizer file") from None
    return vqvae.eval()
