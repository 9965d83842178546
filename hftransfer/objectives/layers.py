"""Building blocks of the adaptation objectives: gradient reversal, domain discriminator, MMD and CORAL."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from hftransfer.heads import BOTTLENECK_NORMS


def grl_coefficient(progress: float, alpha: float = 10.0, high: float = 1.0) -> float:
    """DANN warm start: ``high * (2 / (1 + exp(-alpha * p)) - 1)``, 0 at the start, -> ``high`` at the end."""
    return float(high * (2.0 / (1.0 + math.exp(-alpha * progress)) - 1.0))


class _ReverseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, coefficient: float) -> torch.Tensor:
        ctx.coefficient = coefficient
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.coefficient * grad, None


def reverse_gradient(x: torch.Tensor, coefficient: float) -> torch.Tensor:
    """Identity forward; the backward multiplies the gradient by ``-coefficient``."""
    return _ReverseGrad.apply(x, coefficient)


class DomainDiscriminator(nn.Module):
    """Linear-Norm-ReLU x2 then one logit per sample (source = 1): train it with BCE *with logits* (autocast-safe)."""

    def __init__(self, in_features: int, hidden_dim: int = 1024, norm: str = "batch"):
        super().__init__()
        if norm not in BOTTLENECK_NORMS:
            raise ValueError(f"objective.norm={norm!r} is not supported; use one of {list(BOTTLENECK_NORMS)}.")

        def block(i: int, o: int) -> list[nn.Module]:
            layer = {"batch": nn.BatchNorm1d, "layer": nn.LayerNorm}.get(norm)
            return [nn.Linear(i, o), layer(o) if layer else nn.Identity(), nn.ReLU()]

        self.net = nn.Sequential(*block(in_features, hidden_dim), *block(hidden_dim, hidden_dim),
                                 nn.Linear(hidden_dim, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features).squeeze(-1)


def multi_kernel_mmd(source: torch.Tensor, target: torch.Tensor,
                     kernel_scales: Sequence[float] = (0.125, 0.25, 0.5, 1.0, 2.0)) -> torch.Tensor:
    """Biased squared MMD with a sum of Gaussian kernels (DAN): bandwidths ``scale * mean pairwise distance``.

    0 for identical batches, positive when the distributions differ. Computed in fp32.
    """
    source, target = source.float(), target.float()
    joint = torch.cat([source, target])
    dist = torch.cdist(joint, joint).pow(2)
    base = dist.detach().sum() / max(1, dist.numel() - dist.shape[0])
    base = base.clamp(min=1e-8)
    kernel = sum(torch.exp(-dist / (2.0 * s * base)) for s in kernel_scales) / len(kernel_scales)
    n = source.shape[0]
    k_ss, k_tt, k_st = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]
    return (k_ss.mean() + k_tt.mean() - 2.0 * k_st.mean()).clamp(min=0.0)


def coral_loss(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CORAL: ``mean((mu_s - mu_t)^2) + mean((C_s - C_t)^2)`` (covariances with n - 1), in fp32."""
    source, target = source.float(), target.float()

    def stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = x.mean(0, keepdim=True)
        centred = x - mean
        return mean, centred.t() @ centred / max(1, x.shape[0] - 1)

    mean_s, cov_s = stats(source)
    mean_t, cov_t = stats(target)
    return (mean_s - mean_t).pow(2).mean() + (cov_s - cov_t).pow(2).mean()
