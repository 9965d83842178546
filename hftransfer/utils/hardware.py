"""What the machine's processors do fast: one answer for every place that picks a precision."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import torch


# CPU flags whose presence makes bf16 matmuls faster than fp32 ones (oneDNN uses them): Intel AMX tiles and the
# AVX-512 bf16 dot-product instructions (Intel Cooper Lake+, AMD Zen 4+).
FAST_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags (Linux ``/proc/cpuinfo``); empty where they cannot be read."""
    if not sys.platform.startswith("linux"):
        return frozenset()
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU runs bf16 matmuls natively (Intel AMX tiles or AVX-512 bf16); without them bf16 is slower."""
    capability = str(torch.backends.cpu.get_cpu_capability()).upper()
    probes = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    if "AMX" in capability or any(bool(probe()) for probe in probes if probe is not None):
        return True
    return any(flag in cpu_flags() for flag in FAST_BF16_CPU_FLAGS)


def fast_bf16(device: torch.device | str) -> bool:
    """Whether bf16 autocast speeds up matmuls/convolutions on ``device`` (CUDA with bf16, or a CPU with AMX or
    AVX-512 bf16). Elsewhere bf16 on the CPU is emulated and slower than fp32."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_has_fast_bf16()
    return False
