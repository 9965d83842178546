"""Inference precision: bf16 autocast where the hardware runs it natively (AMX / AVX512-BF16 CPUs, recent GPUs)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from hftransfer.errors import ConfigurationError


PRECISIONS = ("auto", "bf16", "fp32")


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bf16 matmuls (Intel AMX tiles or AVX512-BF16); without them bf16 is slower."""
    capability = str(torch.backends.cpu.get_cpu_capability())
    checks = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return "AMX" in capability.upper() or any(bool(check()) for check in checks if check is not None)


def resolve_precision(precision: str, device: torch.device) -> str:
    """`"bf16"` or `"fp32"`: `"auto"` picks bf16 on CPUs/GPUs that run it natively."""
    if precision not in PRECISIONS:
        raise ConfigurationError(f"precision={precision!r} is not supported; use one of {list(PRECISIONS)}.")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_supports_bf16() else "fp32"


@contextlib.contextmanager
def autocast(precision: str, device: torch.device) -> Iterator[None]:
    """bf16 autocast for `precision="bf16"`, else nothing."""
    if precision == "bf16":
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
    else:
        yield
