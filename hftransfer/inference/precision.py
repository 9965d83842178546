"""Inference precision: bf16 autocast where the hardware runs it natively (AMX / AVX512-BF16 CPUs, recent GPUs)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from hftransfer.errors import ConfigurationError
from hftransfer.utils.hardware import fast_bf16


PRECISIONS = ("auto", "bf16", "fp32")


def resolve_precision(precision: str, device: torch.device) -> str:
    """`"bf16"` or `"fp32"`: `"auto"` picks bf16 on CPUs/GPUs that run it natively."""
    if precision not in PRECISIONS:
        raise ConfigurationError(f"precision={precision!r} is not supported; use one of {list(PRECISIONS)}.")
    if precision != "auto":
        return precision
    return "bf16" if fast_bf16(device) else "fp32"


@contextlib.contextmanager
def autocast(precision: str, device: torch.device) -> Iterator[None]:
    """bf16 autocast for `precision="bf16"`, else nothing."""
    if precision == "bf16":
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
    else:
        yield
