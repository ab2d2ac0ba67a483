"""Set-to-set flow matching (SSFM, paper section 4.2).

The encoder sees the surviving constituents only. A time-conditioned transformer decoder
generates the whole dropped set jointly: its elements attend to each other and, through
cross-attention, to the encoder outputs (registers included), and it regresses the
flow-matching velocity of every element at once (one time t per jet: x_t = (1 - t) x + t eps,
target u = x - eps, t ~ logit-normal), so the set is a single sample, not independent
per-constituent draws. Time enters DiT-style (adaLN-Zero). No mask tokens and no positional
encoding: the loss only denoises the dropped set, so there is no degeneracy to break.

Particle IDs are discrete, so they are not flowed: a linear head on the decoder output
predicts each generated element's ID (cross-entropy), reading its noisy continuous features
x_t and the context. At sampling time the ID is read at t = 0, i.e. given the generated
features: p(x, id | visible) = p(x | visible) p(id | x, visible).
"""

import torch
import torch.nn.functional as F
from torch import nn

from mpm.data import schema
from mpm.models.encoder import JetEncoder
from mpm.models.layers import Attention, SwiGLU
from mpm.models.packing import Packing, packing_of, unpack
from mpm.tasks.generative import time_embedding

N_FREQUENCIES = 8


class AdaLNZeroBlock(nn.Module):
    """Self-attention over the generated set, cross-attention to the context, SwiGLU
    feed-forward; each after a LayerNorm whose shift and scale come from the time condition,
    each residual branch gated by a time-dependent gate initialised at zero (DiT adaLN-Zero)."""

    def __init__(self, dim: int, heads: int, ff_mult: int = 2):
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(dim, elementwise_affine=False) for _ in range(3))
        self.self_attn = Attention(dim, heads)
        self.cross_attn = Attention(dim, heads)
        self.ff = SwiGLU(dim, ff_mult)
        self.modulation = nn.Linear(dim, 9 * dim)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, x, packing: Packing, context, context_packing: Packing, cond):
        """x [T, D] (the packed generated sets of `packing`), context [C, D] (packed, of
        `context_packing`), cond [B, D] (one per jet)."""
        # per token by index_select: a backward that sums in a fixed order (see MaskedAutoencoder)
        mod = self.modulation(F.silu(cond)).index_select(0, packing.jet).chunk(9, dim=-1)
        branches = (
            lambda h: self.self_attn(h, packing),
            lambda h: self.cross_attn(h, packing, context, context_packing),
            self.ff,
        )
        for i, (norm, branch) in enumerate(zip(self.norms, branches)):
            shift, scale, gate = mod[3 * i : 3 * i + 3]
            x = x + gate * branch(norm(x) * (1 + scale) + shift)
        return x


class SetToSetFlowMatching(nn.Module):
    def __init__(
        self,
        encoder: JetEncoder,
        dim: int,
        depth: int,
        heads: int,
        ids: bool = True,
        sample_steps: int = 50,
    ):
        super().__init__()
        if encoder.n_registers == 0:
            # with nothing visible, the registers are the decoder's only context
            raise ValueError("SSFM needs an encoder with at least one register")
        self.encoder = encoder
        self.features = encoder.features
        n_features = len(self.features)
        self.sample_steps = sample_steps
        self.to_decoder = nn.Linear(encoder.dim, dim)
        self.embed_x = nn.Linear(n_features, dim)
        self.embed_t = nn.Sequential(
            nn.Linear(2 * N_FREQUENCIES, dim), nn.SiLU(), nn.Linear(dim, dim)
        )
        self.blocks = nn.ModuleList(AdaLNZeroBlock(dim, heads) for _ in range(depth))
        self.norm_out = nn.LayerNorm(dim, elementwise_affine=False)
        self.modulation_out = nn.Linear(dim, 2 * dim)
        self.velocity = nn.Linear(dim, n_features)
        for layer in (self.modulation_out, self.velocity):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.id_head = nn.Linear(dim, len(schema.PARTICLE_IDS)) if ids else None

    def context(self, csts, ids, mask, dropped) -> tuple[torch.Tensor, Packing]:
        """Encoder outputs of the surviving constituents (and registers) at decoder width,
        packed."""
        encoded, packing, _ = self.encoder.encode_constituents(csts, ids, mask & ~dropped)
        return self.to_decoder(encoded), packing

    def decode(self, x_t, packing: Packing, t, context, context_packing: Packing):
        """Decoder outputs [T, dim] for the packed noisy sets x_t [T, F] at times t [B]."""
        cond = self.embed_t(time_embedding(t, N_FREQUENCIES))
        h = self.embed_x(x_t)
        for block in self.blocks:
            h = block(h, packing, context, context_packing, cond)
        modulation = self.modulation_out(F.silu(cond)).index_select(0, packing.jet)
        shift, scale = modulation.chunk(2, dim=-1)
        return self.norm_out(h) * (1 + scale) + shift

    def forward(self, csts, ids, mask, dropped) -> dict[str, torch.Tensor]:
        """Per-element flow-matching MSE ("ssfm") and ID logits with their targets over the
        M dropped constituents: {"ssfm": scalar, "id_logits": [M, 8], "ids": [M]}."""
        context, context_packing = self.context(csts, ids, mask, dropped)
        packing = packing_of(dropped.sum(1))
        x = csts[dropped][:, self.features]
        t = torch.sigmoid(torch.randn(len(mask), device=x.device, dtype=x.dtype))
        eps = torch.randn_like(x)
        t_x = t[packing.jet, None]
        x_t = (1 - t_x) * x + t_x * eps
        hidden = self.decode(x_t, packing, t, context, context_packing)
        mse = (self.velocity(hidden) - (x - eps)).pow(2).mean(-1)
        out = {"ssfm": mse.mean() if len(mse) else mse.sum()}
        if self.id_head is not None:
            out["id_logits"] = self.id_head(hidden)
            out["ids"] = ids[dropped]
        return out

    @torch.no_grad()
    def sample(self, csts, ids, mask, dropped, steps: int | None = None):
        """Generate the dropped set given the surviving one: features [B, W, F] (the encoder's
        feature set), IDs [B, W] (zeros without an ID head) and the mask [B, W] of generated
        elements, in the order of the dropped constituents. `dropped = mask` generates whole
        jets of the given multiplicities from the registers alone."""
        steps = steps or self.sample_steps
        context, context_packing = self.context(csts, ids, mask, dropped)
        packing = packing_of(dropped.sum(1))
        x = torch.randn(packing.n_tokens, len(self.features), device=csts.device)
        dt = 1.0 / steps
        for i in range(steps, 0, -1):  # Euler steps of dx = -u dt from t = 1 to t = 0
            t = torch.full((len(mask),), i * dt, device=x.device)
            x = x + dt * self.velocity(self.decode(x, packing, t, context, context_packing))
        generated_ids = torch.zeros(packing.n_tokens, dtype=torch.long, device=x.device)
        if self.id_head is not None:
            t = torch.zeros(len(mask), device=x.device)
            generated_ids = self.id_head(self.decode(x, packing, t, context, context_packing))
            generated_ids = generated_ids.argmax(-1)
        return unpack(x, packing), unpack(generated_ids, packing), packing.padding_mask()
