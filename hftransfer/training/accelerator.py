"""The one place an ``accelerate.Accelerator`` is built, for training and for ``hftransfer evaluate``."""

from __future__ import annotations

import os

import torch
from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs
from accelerate.state import AcceleratorState, GradientState


def reset_accelerate_state() -> None:
    """Let several runs with different precision share one Python process (notebooks, test suites).

    accelerate keeps a process-wide singleton; the process group (PartialState) is kept, only the per-run state goes.
    """
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()


def cpu_process_group() -> bool:
    """Whether this is one of several processes on a machine without CUDA: accelerate forms a gloo process group
    there only when told to use the CPU."""
    return not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1


def build_accelerator(mixed_precision: str | None = None, *, gradient_accumulation_steps: int = 1,
                      log_with: list[str] | None = None, project_dir: str | None = None,
                      find_unused_parameters: bool = False) -> Accelerator:
    """A fresh Accelerator (per-run state reset) with ``split_batches=True``: ``batch_size`` is the global batch,
    sliced across processes, so one config gives the same optimisation whatever the number of processes."""
    reset_accelerate_state()
    return Accelerator(
        cpu=cpu_process_group(), mixed_precision=mixed_precision,
        gradient_accumulation_steps=gradient_accumulation_steps,
        dataloader_config=DataLoaderConfiguration(split_batches=True), log_with=log_with, project_dir=project_dir,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters)],
    )
