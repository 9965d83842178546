"""Checks a run makes before its long work: on the output folder, the accelerator and the loaded data.

Config values and method options are checked when the config is built (``TrainConfig.__post_init__``); the backbone
name and the method's fit to the backbone are checked by the engine's pre-flight model load, before any data is read.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from accelerate.utils import DistributedType

from hftransfer.backbones import check_backbone_name
from hftransfer.errors import ConfigurationError, OutputDirError
from hftransfer.hub.push import check_push_target
from hftransfer.metrics import classification_metric_names
from hftransfer.objectives import list_objectives, normalize_objective, objective_entry
from hftransfer.training import checkpoint as ckpt
from hftransfer.training.model_setup import load_model_with_method
from hftransfer.training.sharding import sharding_kind


if TYPE_CHECKING:
    from accelerate import Accelerator

    from hftransfer.data import LoadedData
    from hftransfer.modeling import AutoTransfer
    from hftransfer.training.config import TrainConfig


def preflight(config: TrainConfig, output_dir: Path, method: str) -> tuple[TrainConfig, AutoTransfer]:
    """Checks that need no data, run before the data set is read (which can take minutes): ``output_dir`` is a folder
    (or can become one), the backbone name resolves and is available, the method fits the backbone (the returned
    model, built with it), the push target is valid. Returns the config with the recipe's defaults for the backbone
    family filled in (the user's values win; they set only what is read later: ``recipes.registry.FAMILY_KEYS``)."""
    check_output_path(output_dir)
    check_backbone_name(config.model.name, revision=config.model.revision, pretrained=config.model.pretrained)
    model = load_model_with_method(config, method)
    final = config.for_modality(model.modality)  # a model/data modality mismatch fails once the data is known
    if config.push_to_hub:
        check_push_target(config.hub_repo_id, config.hub_revision)
    return final, model


def check_output_path(out: Path) -> None:
    """``output_dir`` is a folder or can become one (no file on its path)."""
    blocker = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise OutputDirError(
            f"output_dir={str(out)!r} cannot be a folder: {str(blocker)!r} is a file. Choose another output_dir "
            "or move the file."
        )


def prepare_output_dir(out: Path, overwrite: bool, accelerator: Accelerator) -> None:
    """Refuse a finished run unless ``overwrite``; with it, the old run's model, checkpoints and metrics go."""
    if (out / ckpt.METRICS_FILE).is_file() and not overwrite:
        raise OutputDirError(
            f"output_dir={str(out)!r} already holds a finished run (metrics.json). Set overwrite_output_dir=true "
            "or choose another output_dir."
        )
    if overwrite and accelerator.is_main_process and out.exists():
        for child in (out / ckpt.CHECKPOINT_DIR, out / ckpt.MODEL_DIR, out / ckpt.METRICS_FILE):
            shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)
    accelerator.wait_for_everyone()


def check_accelerator(accelerator: Accelerator, batch_size: int, objective: str | dict | None = None) -> None:
    """fp16 trains with autocast and a gradient scaler; accelerate gives neither on a CPU, where the run would
    silently train in fp32 while its metrics say fp16 (DeepSpeed scales the loss itself). ``batch_size`` is the
    global batch: it must split evenly across the processes. ``objective`` (the config's) must fit the sharding:
    :func:`check_objective_sharding`."""
    acc = accelerator
    if acc.mixed_precision == "fp16" and acc.scaler is None and acc.distributed_type != DistributedType.DEEPSPEED:
        raise ConfigurationError(
            f"mixed_precision='fp16' needs a GPU: on {acc.device.type!r} accelerate runs no fp16 autocast or "
            "gradient scaler (the run would train in fp32). Use mixed_precision=bf16 (or no) on CPU."
        )
    if batch_size % acc.num_processes:
        raise ConfigurationError(f"batch_size={batch_size} is the global batch and must divide evenly "
                                 f"across {acc.num_processes} processes; use a multiple of {acc.num_processes}.")
    check_objective_sharding(acc, objective)


def check_objective_sharding(accelerator: Accelerator, objective: str | dict | None) -> None:
    """An objective that trains modules of its own (DANN's discriminator) puts them in the model's optimizer; FSDP
    and DeepSpeed ZeRO build their sharded optimizer around the one prepared model, so they cannot train them
    (FSDP fails inside ``accelerate.prepare``, ZeRO inside its optimizer). Refuse before any data is read."""
    kind = sharding_kind(accelerator)
    if kind is None or objective is None:
        return
    entry = objective_entry(normalize_objective(objective)["name"])
    own = entry.objective_cls.own_modules
    if own:
        usable = [o for o in list_objectives()
                  if o != "source_only" and not objective_entry(o).objective_cls.own_modules]
        raise ConfigurationError(
            f"objective.name={entry.name!r} trains {own} beside the model, in the model's optimizer, but this run "
            f"shards state with {kind} (accelerate's FSDP / DeepSpeed preset), whose optimizer holds one model only. "
            f"Launch it without the sharding preset (`accelerate launch --num_processes N -m hftransfer.recipes ...`: "
            f"DDP, every process holds the whole model), or choose an objective that trains no module of its own: "
            f"{', '.join(usable)}.")


def check_against_data(config: TrainConfig, data: LoadedData) -> None:
    """Checks that need the loaded data but no model: the best-model metric is computed for this label count and
    explicit class weights give one weight per class."""
    cfg = config
    names = ["loss", *classification_metric_names(data.num_labels)]
    if cfg.metric_for_best not in names:
        raise ConfigurationError(
            f"metric_for_best={cfg.metric_for_best!r} is not computed for {data.num_labels} classes "
            f"(top-k accuracy needs more than k classes); use one of {names}."
        )
    if isinstance(cfg.class_weights, (list, tuple)) and len(cfg.class_weights) != data.num_labels:
        raise ConfigurationError(
            f"class_weights has {len(cfg.class_weights)} weights but the data has {data.num_labels} classes "
            f"{data.label_names[:20]}; give one weight per class in that order, or class_weights=auto."
        )
