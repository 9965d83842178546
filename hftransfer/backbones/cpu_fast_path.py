"""Faster dropout and attention for training on CPUs (``model.cpu_fast_path``).

Why (MiniLM-L6, 32 x 128 tokens, bf16 autocast, forward+backward on this project's 2-core CPU; the numbers are in
``bench/results/RESULTS.md``):

- PyTorch's CPU dropout draws one 32-bit random number per element through ``bernoulli_``: about 14 ms for a
  4096 x 384 activation and 83 ms for one layer's 32 x 12 x 128 x 128 attention probabilities, a fifth of the whole
  step. Here a mask element costs 16 random bits (four per 64-bit draw) and one compare: 3-6x faster, the same
  Bernoulli distribution with ``p`` rounded to a multiple of 1/65536, seeded by the same ``torch`` generator (so runs
  stay reproducible and resume exactly).
- SDPA's fused CPU kernel has no dropout, so with BERT's attention dropout it falls back to its math path; without
  dropout the fused (flash) kernel runs but is slower than two matmuls and a softmax at head size 32 and short
  sequences. The attention registered here is that math path with the fast dropout.

Everything else (GPUs, inference, models without transformers' attention interface) keeps the stock kernels.
"""

from __future__ import annotations

import torch
from torch import nn


CPU_ATTENTION = "hftransfer_cpu"  # the name registered with transformers' AttentionInterface
_BITS = 16
_LEVELS = 1 << _BITS


class _MaskedScale(torch.autograd.Function):
    """``x * mask / (1 - p)`` saving only the boolean mask for backward (as ``native_dropout`` does)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return torch.where(keep, x, 0).mul_(scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return torch.where(keep, grad, 0).mul_(ctx.scale), None, None


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> torch.Tensor:
    """Boolean mask, each element True with probability ``1 - p`` (``p`` rounded to a multiple of 1/65536): four
    16-bit samples per 64-bit draw of the default generator."""
    n = shape.numel()
    # All 64 bits random (``random_()`` without bounds leaves the sign bit 0, which would bias every 4th sample).
    words = torch.randint(-(1 << 63), (1 << 63) - 1, ((n + 3) // 4,), dtype=torch.int64, device=device)
    samples = words.view(torch.int16)[:n].view(shape)  # uniform over [-32768, 32767]
    threshold = round(p * _LEVELS) - _LEVELS // 2
    return samples >= threshold


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout`` with the cheaper mask on CPU tensors; elsewhere (and for p in {0, 1}) ``F.dropout`` itself."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return nn.functional.dropout(x, p, training)
    return _MaskedScale.apply(x, keep_mask(x.shape, p, x.device), 1.0 / (1.0 - p))


class FastDropout(nn.Dropout):
    """``nn.Dropout`` whose mask comes from :func:`fast_dropout` (same ``p``, same state dict: none)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inplace:
            return nn.functional.dropout(x, self.p, self.training, inplace=True)
        return fast_dropout(x, self.p, self.training)


def math_attention_forward(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                           attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                           **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' eager attention (scores, mask, softmax, dropout, weighted values) with :func:`fast_dropout`.
    Same signature as transformers' attention functions; grouped-query heads are repeated to the query heads."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    if key.shape[1] != query.shape[1]:  # grouped-query attention
        repeat = query.shape[1] // key.shape[1]
        key, value = key.repeat_interleave(repeat, dim=1), value.repeat_interleave(repeat, dim=1)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask[:, :, :, : key.shape[-2]], torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask[:, :, :, : key.shape[-2]]
    probs = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    probs = fast_dropout(probs, dropout, module.training)
    out = torch.matmul(probs, value).transpose(1, 2).contiguous()
    return out, probs


def register_attention() -> None:
    """Register :func:`math_attention_forward` with transformers under :data:`CPU_ATTENTION`, with SDPA's mask format
    (boolean, or none when nothing is padded); a name without a mask function would get no padding mask at all."""
    from transformers import AttentionInterface  # heavy: loaded only when used
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask  # heavy: loaded only when used

    AttentionInterface.register(CPU_ATTENTION, math_attention_forward)
    AttentionMaskInterface.register(CPU_ATTENTION, sdpa_mask)


def enable_cpu_fast_path(model: nn.Module) -> list[str]:
    """Swap ``model``'s dropout layers for :class:`FastDropout` and, for transformers models on the attention
    interface whose attention is SDPA, route attention through :data:`CPU_ATTENTION`. Returns what changed, for
    the log. Parameters, buffers and state-dict keys are untouched."""
    changed: list[str] = []
    swapped = _swap_dropout(model, nn.Dropout, FastDropout)
    if swapped:
        changed.append(f"{swapped} dropout layers use the fast CPU mask")
    for sub in model.modules():
        config = getattr(sub, "config", None)
        if (getattr(sub, "_supports_attention_backend", False) and hasattr(sub, "set_attn_implementation")
                and getattr(config, "_attn_implementation", None) == "sdpa"):
            register_attention()
            sub.set_attn_implementation(CPU_ATTENTION)
            changed.append(f"attention: {CPU_ATTENTION} (math path with the fast dropout) instead of sdpa")
            break
    return changed


def disable_cpu_fast_path(model: nn.Module) -> None:
    """Undo :func:`enable_cpu_fast_path` (before saving a config, or moving to a GPU)."""
    _swap_dropout(model, FastDropout, nn.Dropout)
    for sub in model.modules():
        config = getattr(sub, "config", None)
        if getattr(config, "_attn_implementation", None) == CPU_ATTENTION and hasattr(sub, "set_attn_implementation"):
            sub.set_attn_implementation("sdpa")
            break


def _swap_dropout(model: nn.Module, old: type[nn.Dropout], new: type[nn.Dropout]) -> int:
    """Replace every ``old`` dropout layer (exact type, p > 0) by a ``new`` one with the same settings; returns how
    many."""
    count = 0
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if type(child) is old and child.p > 0:
                swapped = new(child.p, child.inplace)
                swapped.train(child.training)
                setattr(parent, name, swapped)
                count += 1
    return count
