"""Generative reconstruction tasks: they learn p(x | d) of a dropped constituent's continuous
features x given its decoder output d, and can sample reconstructions."""

import math

import normflows as nf
import torch
import torch.nn.functional as F
from torch import nn

from mpm.tasks.reconstruction import N_FEATURES, ReconstructionTask


class ConditionalFlow(ReconstructionTask):
    """Conditional normalizing flow (normflows): rational-quadratic-spline coupling blocks
    conditioned on d, alternating halves, with a standard normal base; maximum likelihood."""

    def __init__(self, dim: int, n_features: int = N_FEATURES, blocks: int = 6, hidden: int = 128,
                 bins: int = 8, tail_bound: float = 5.0, weight: float = 1.0):  # fmt: skip
        super().__init__(weight)
        flows = [
            nf.flows.CoupledRationalQuadraticSpline(
                n_features,
                num_blocks=1,
                num_hidden_channels=hidden,
                num_context_channels=dim,
                num_bins=bins,
                tail_bound=tail_bound,
                reverse_mask=i % 2 == 1,
            )  # fmt: skip
            for i in range(blocks)
        ]
        base = nf.distributions.DiagGaussian(n_features, trainable=False)
        self.flow = nf.ConditionalNormalizingFlow(base, flows)

    def loss(self, decoded, batch, dropped):
        return -self.flow.log_prob(batch["csts"][dropped], context=decoded).mean()

    @torch.no_grad()
    def sample(self, decoded: torch.Tensor) -> torch.Tensor:
        return self.flow.sample(len(decoded), context=decoded)[0]


def time_embedding(t: torch.Tensor, n_frequencies: int = 8) -> torch.Tensor:
    """[M] times in [0, 1] -> [M, 2 n] cos/sin features at frequencies pi * 2^k, k < n (a
    bounded range: the embedding stays smooth in t)."""
    freqs = math.pi * 2.0 ** torch.arange(n_frequencies, device=t.device, dtype=t.dtype)
    angles = t[:, None] * freqs
    return torch.cat([angles.cos(), angles.sin()], dim=1)


class FlowMatching(ReconstructionTask):
    """Conditional flow matching (Lipman et al.): x_t = (1 - t) x + t eps, t ~ logit-normal,
    an MLP on (x_t, d, embed(t)) regresses u = x - eps; sampling integrates from t = 1 (noise)
    to t = 0 with `steps` Euler steps of dx = -u dt."""

    def __init__(self, dim: int, n_features: int = N_FEATURES, hidden: int = 256,
                 n_frequencies: int = 8, steps: int = 50, weight: float = 1.0):  # fmt: skip
        super().__init__(weight)
        self.n_features, self.n_frequencies, self.steps = n_features, n_frequencies, steps
        self.net = nn.Sequential(
            nn.Linear(n_features + dim + 2 * n_frequencies, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, n_features),
        )

    def velocity(self, x_t, decoded, t) -> torch.Tensor:
        return self.net(torch.cat([x_t, decoded, time_embedding(t, self.n_frequencies)], dim=1))

    def loss(self, decoded, batch, dropped):
        csts = batch["csts"][dropped]
        t = torch.sigmoid(torch.randn(len(csts), device=csts.device, dtype=csts.dtype))
        eps = torch.randn_like(csts)
        x_t = (1 - t[:, None]) * csts + t[:, None] * eps
        return F.mse_loss(self.velocity(x_t, decoded, t), csts - eps)

    @torch.no_grad()
    def sample(self, decoded: torch.Tensor) -> torch.Tensor:
        x = torch.randn(len(decoded), self.n_features, device=decoded.device, dtype=decoded.dtype)
        dt = 1.0 / self.steps
        for i in range(self.steps, 0, -1):
            t = torch.full((len(decoded),), i * dt, device=decoded.device, dtype=decoded.dtype)
            x = x + dt * self.velocity(x, decoded, t)
        return x
