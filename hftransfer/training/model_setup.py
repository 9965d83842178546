"""The run's model: the backbone with the recipe's method (before any data is read), then fitted to the data and the
hardware (head for the labels, image size, gradient checkpointing, channels-last, CPU fast path, compile)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from accelerate.utils import set_seed

from hftransfer.backbones.cpu_fast_path import enable_cpu_fast_path
from hftransfer.errors import ConfigurationError
from hftransfer.modeling import AutoTransfer
from hftransfer.training.sharding import sharding_kind
from hftransfer.utils.compile import CompileTimer, compile_in_place


if TYPE_CHECKING:
    from accelerate import Accelerator

    from hftransfer.data import LoadedData
    from hftransfer.training.config import TrainConfig

Log = Callable[[str], None]


def load_model_with_method(config: TrainConfig, method: str) -> AutoTransfer:
    """The backbone with ``method`` applied: a method the backbone cannot take (``check_backbone``) fails here. The
    head has 2 labels until ``reset_head`` gives it the data's labels (they are not known before the data is read)."""
    cfg = config
    set_seed(cfg.seed)  # adapter / prompt initialisation is part of the run's seeded randomness
    model = AutoTransfer.from_pretrained(
        cfg.model.name, num_labels=2, revision=cfg.model.revision, pretrained=cfg.model.pretrained,
        pooling=cfg.model.pooling, max_length=cfg.model.max_length, head_dropout=cfg.model.head_dropout,
        trust_remote_code=cfg.model.trust_remote_code, **cfg.model.config_overrides,
    )
    # The method's options may depend on the backbone family (recipe family_defaults): the model tells which.
    model.apply_method(method, cfg.for_modality(model.modality).method)
    return model


def fit_model(model: AutoTransfer, config: TrainConfig, data: LoadedData, accelerator: Accelerator,
              log: Log) -> CompileTimer | None:
    """Head for the data's labels, trainable parameters, and the model options; returns the compile timer when
    ``model.compile`` applies."""
    cfg = config
    model.reset_head(data.id2label, cfg.model.head_dropout)
    model.method.set_trainable(model)
    if model.modality != data.modality:
        raise ConfigurationError(f"model.name={cfg.model.name!r} is a {model.modality} backbone but the "
                                 f"data ({cfg.data.source!r}) is {data.modality}. Pick a matching backbone or "
                                 "dataset.")
    if cfg.model.image_size and model.modality == "image":
        model.backbone.preprocessor = model.preprocessor.with_image_size(cfg.model.image_size)
    if cfg.model.gradient_checkpointing:
        model.backbone.set_grad_checkpointing(True)
    if cfg.model.channels_last and model.modality == "image":
        if (kind := sharding_kind(accelerator)) is not None:
            # FSDP2 shards only contiguous parameters; DeepSpeed's broadcast views each one as bytes (fails on
            # channels-last conv weights: "stride(-1) must be 1").
            log(f"model.channels_last skipped: {kind} needs contiguous (NCHW) parameters")
        else:
            model.to(memory_format=torch.channels_last)
    if cfg.model.cpu_fast_path and accelerator.device.type == "cpu":
        for change in enable_cpu_fast_path(model):
            log(f"model.cpu_fast_path: {change}")
    timer = _compile(model, accelerator.device, log) if cfg.model.compile else None
    log(model.trainable_parameters_line())
    return timer


def _compile(model: AutoTransfer, device: torch.device, log: Log) -> CompileTimer | None:
    """``model.compile``: compile in place (names unchanged) and time compilation apart from training."""
    outcome = compile_in_place(model, device)
    if not outcome.compiled:
        log(f"model.compile=true cannot apply: {outcome.note}. Training continues without compiling.")
        return None
    if outcome.note:
        log(f"model.compile: {outcome.note}")
    timer = CompileTimer().__enter__()
    built_by = f", C++ compiler {outcome.cpp_compiler!r}" if outcome.cpp_compiler else ""
    log(f"torch.compile: on (inductor{built_by}); the first steps compile, and that time is reported as "
        "compile_time_s, apart from train_samples_per_s")
    return timer
