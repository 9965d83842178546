"""``mixed_precision: auto``: the faster of fp32 and bf16 for this model, measured, and the reason recorded.

Why measure instead of a rule: on CPUs with AMX, bf16 speeds convolutions up at 224 px (EfficientNet-Lite0 fwd+bwd
24 -> 35 images/s here) but slows them down at 96 px (188 -> 116), because the fp32 channels-last kernels win on small
maps where the bf16 casts dominate. So for image models ``auto`` times a few forward+backward steps of a copy of the
model at the training resolution in both precisions (seconds) and keeps the faster. Text models and devices without
fast bf16 follow the rule the measurements agree on: bf16 where the hardware runs it natively (transformer matmuls),
else fp32. The timing runs on a copy with its own RNG, so the run's weights, BN statistics and seeds are untouched.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list
from torch import nn

from hftransfer.errors import PerformanceWarning
from hftransfer.utils.hardware import fast_bf16
from hftransfer.utils.io import read_json, write_json


CHOICE_FILE = "mixed_precision_auto.json"  # in output_dir: a resumed run keeps the precision it started with
TIMED_STEPS = 3
WARMUP_STEPS = 1
MAX_PROBE_BATCH = 8  # per-sample cost is what is compared; a small batch keeps the probe to seconds


@dataclass
class PrecisionChoice:
    """What ``auto`` chose (accelerate's name: ``"no"`` or ``"bf16"``), why, and the samples/s it measured."""

    mixed_precision: str
    reason: str
    measured: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"mixed_precision": self.mixed_precision, "reason": self.reason, "measured_samples_per_s":
                self.measured}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrecisionChoice:
        return cls(data["mixed_precision"], data["reason"], dict(data.get("measured_samples_per_s") or {}))


def choose_precision(model: nn.Module, device: torch.device, batch_size: int, channels_last: bool,
                     image_size: int | None = None) -> PrecisionChoice:
    """Pick ``"no"`` or ``"bf16"`` for training ``model`` (an ``AutoTransfer`` with its method applied) at
    ``image_size`` (default: the model's pretrained resolution)."""
    if not fast_bf16(device):
        return PrecisionChoice("no", f"bf16 is not native on this {device.type} (no AMX / AVX512-BF16 or bf16 GPU)")
    if model.modality != "image":
        return PrecisionChoice("bf16", "text transformer on hardware with native bf16 matmuls")
    size = image_size or model.preprocessor.image_size
    measured = {mode: _samples_per_s(model, device, min(batch_size, MAX_PROBE_BATCH), size, channels_last, mode)
                for mode in ("no", "bf16")}
    best = max(measured, key=measured.get)
    layout = "channels-last " if channels_last else ""
    return PrecisionChoice(best, f"measured {layout}forward+backward at {size} px: fp32 {measured['no']:.1f} vs bf16 "
                                 f"{measured['bf16']:.1f} samples/s", {k: round(v, 2) for k, v in measured.items()})


def _samples_per_s(model: nn.Module, device: torch.device, batch: int, size: int, channels_last: bool,
                   mode: str) -> float:
    probe = copy.deepcopy(model).to(device).train()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    probe.to(memory_format=memory_format)
    with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(batch, 3, size, size, generator=generator).to(device, memory_format=memory_format)
        elapsed = 0.0
        for step in range(WARMUP_STEPS + TIMED_STEPS):
            start = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=mode == "bf16"):
                logits = probe(pixel_values=x).logits
            if logits.requires_grad:  # nothing trainable upstream (e.g. a frozen head-only probe): forward only
                logits.float().square().mean().backward()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if step >= WARMUP_STEPS:
                elapsed += time.perf_counter() - start
    return batch * TIMED_STEPS / elapsed


def resolve_auto_precision(model: nn.Module, output_dir: Path, batch_size: int, channels_last: bool,
                           image_size: int | None, resuming: bool, cpu_only: bool) -> PrecisionChoice:
    """``mixed_precision: auto`` on every process: the main process's measured choice (written to ``CHOICE_FILE``),
    or, when ``resuming`` a run that stored one, the precision it started with."""


    stored = Path(output_dir) / CHOICE_FILE
    state = PartialState(cpu=cpu_only)
    if resuming and stored.is_file():
        choice = PrecisionChoice.from_dict(read_json(stored))  # resume in the precision the run started with
        choice.reason = f"kept from the run being resumed ({choice.reason})"
        return choice
    choice = choose_precision(model, state.device, batch_size, channels_last, image_size=image_size)
    if state.num_processes > 1:
        choice = broadcast_object_list([choice])[0]
    if state.is_main_process:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        write_json(stored, choice.to_dict())
    return choice


def resolve_mixed_precision(requested: str, model: nn.Module | None, output_dir: Path, batch_size: int,
                            channels_last: bool, image_size: int | None, resuming: bool,
                            cpu_only: bool) -> tuple[str, PrecisionChoice | None]:
    """The run's ``mixed_precision``: ``auto`` -> ``"no"`` or ``"bf16"`` (the main process's choice on every process,
    with the choice and its reason); other values pass through to accelerate."""
    if requested != "auto":
        return requested, None
    choice = resolve_auto_precision(model, output_dir, batch_size, channels_last, image_size, resuming, cpu_only)
    return choice.mixed_precision, choice


def warn_slow_bf16(requested: str, device: torch.device, log: Callable[[str], None], is_main_process: bool) -> None:
    """An explicit ``mixed_precision: bf16`` where bf16 is emulated (a CPU without AMX / AVX512-BF16) trains
    several times slower than fp32 (8.8x measured on an AVX2 EPYC): say so before training, with the fix."""
    if requested != "bf16" or fast_bf16(device):
        return
    message = (f"mixed_precision=bf16 on this {device.type}, which has no native bf16 (no AMX / AVX512-BF16 "
               "or bf16 GPU): bf16 is emulated and typically several times slower than fp32 here. Use "
               "mixed_precision=auto (picks the faster one) or mixed_precision=no.")
    log(message)
    if is_main_process:
        warnings.warn(message, PerformanceWarning, stacklevel=3)
