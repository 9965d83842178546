"""``TrainConfig``: everything a run needs, as nested dataclasses that load from YAML and ``key=value`` overrides."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hftransfer.data import DataConfig


@dataclass
class ModelConfig:
    name: str = "packaged:efficientnet_lite0"  # any name AutoTransfer.from_pretrained accepts
    revision: str | None = None  # hub branch, tag or commit
    pretrained: bool = True  # False: random init (tests, from-scratch baselines)
    pooling: str | None = None  # transformers pooling: "cls" | "mean" | "pooler" (None: per model type)
    max_length: int = 128  # tokenizer truncation for text
    head_dropout: float = 0.0
    image_size: int | None = None  # train/eval at another resolution than the pretrained one (faster on CPU)
    channels_last: bool = True  # NHWC memory layout for CNNs (faster on CPU and GPU)
    gradient_checkpointing: bool = False  # recompute activations in backward: much less memory, ~30% slower
    trust_remote_code: bool = False  # never implicit


@dataclass
class OptimConfig:
    name: str = "adamw"  # "adamw" | "sgd"
    lr: float = 1e-3  # base learning rate (the top of the backbone when layer_decay is set)
    head_lr: float | None = None  # learning rate of the head (None: lr)
    weight_decay: float = 0.01  # never applied to norms, biases and other 1-d parameters
    momentum: float = 0.9  # sgd only
    betas: tuple[float, float] = (0.9, 0.999)  # adamw only
    layer_decay: float | None = None  # layer-wise LR decay: block i gets lr * layer_decay ** (depth - i)
    backbone_lr_scale: float = 1.0  # discriminative LR: multiply every backbone LR by this
    fused: bool | None = None  # fused optimizer kernel (one op per step); None: on when every parameter allows it


@dataclass
class SchedulerConfig:
    name: str = "cosine"  # "cosine" | "linear" | "step" | "constant"
    warmup_steps: int = 0  # linear warmup in optimizer steps ...
    warmup_ratio: float = 0.0  # ... or as a fraction of all steps
    step_size_epochs: float = 7.0  # step: decay every this many epochs
    gamma: float = 0.1  # step: decay factor
    min_lr_ratio: float = 0.0  # cosine: final LR as a fraction of the peak


@dataclass
class UnfreezeStage:
    epoch: int  # the stage starts at this epoch (0-based)
    train: str  # "head" | "top:K" (top K backbone blocks + head) | "all"


@dataclass
class TrainConfig:
    """One fine-tuning run. Every recipe reads this; YAML files under recipes/configs/ fill it in."""

    recipe: str = "full"  # registered recipe: see `hftransfer recipes`
    method: dict[str, Any] = field(default_factory=dict)  # options of the recipe's method (e.g. lora r, alpha)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=lambda: DataConfig(source="sklearn_digits"))
    optim: OptimConfig = field(default_factory=OptimConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    epochs: int = 3
    max_steps: int | None = None  # stop after this many optimizer steps (smoke tests)
    batch_size: int = 32  # global batch size (split across processes)
    eval_batch_size: int | None = None
    gradient_accumulation_steps: int = 1
    max_grad_norm: float | None = 1.0
    label_smoothing: float = 0.0
    mixed_precision: str | None = None  # "no" | "bf16" | "fp16" (GPU); None: from `accelerate launch`, else "no"
    seed: int = 42
    augment: str | None = "default"  # image augmentation preset: "none" | "default" | "randaugment"
    mixup_alpha: float = 0.0  # mixup (images): 0 disables
    cutmix_alpha: float = 0.0  # cutmix (images): 0 disables
    unfreeze_schedule: list[UnfreezeStage] = field(default_factory=list)  # e.g. head for 2 epochs, then all
    early_stopping_patience: int | None = None  # epochs without improvement before stopping
    metric_for_best: str = "accuracy"  # validation metric that picks the best checkpoint
    greater_is_better: bool = True
    output_dir: str = "outputs/run"
    overwrite_output_dir: bool = False
    checkpoint_every_steps: int | None = None  # mid-epoch checkpoints for resume (also one at every epoch end)
    keep_checkpoints: int = 2
    resume: bool = True  # continue from the newest checkpoint in output_dir/checkpoints if there is one
    num_workers: int = 0  # DataLoader workers (0 is fastest on small CPUs)
    image_cache_mb: float = 2048  # keep decoded images in memory up to this size per split (0: decode every epoch)
    bucket_by_length: bool = True  # text: batch similar lengths together (little padding)
    log_every_steps: int = 10
    report_to: list[str] = field(default_factory=list)  # ["tensorboard"]
    progress_bar: bool = True
    push_to_hub: bool = False  # push the best model at the end
    hub_repo_id: str | None = None
    hub_private: bool = False
    hub_revision: str | None = None  # branch to push to
    # --- domain adaptation (see hftransfer.objectives and README "Domain adaptation") ---
    objective: dict[str, Any] = field(
        default_factory=lambda: {"name": "source_only"},
        metadata={"help": "Training objective: {name: source_only|dann|mmd|coral|self_training, weight: ..., ...}."})
    target: DataConfig | None = field(
        default=None, metadata={"help": "Unlabelled target-domain data (folder, CSV, .npz); labels ignored."})
    target_eval: DataConfig | None = field(
        default=None, metadata={"help": "Labelled target data, evaluated and reported beside the source metrics."})
    model_selection: str = field(
        default="source", metadata={"help": "Best checkpoint by 'source' validation (default), 'target_entropy' "
                                            "(unsupervised) or 'target_eval' (uses target labels: opt-in)."})
    source_only_baseline: str | None = field(
        default=None, metadata={"help": "A finished source_only run (output_dir or its metrics.json) whose source and "
                                        "target numbers the model card sets beside this run's."})

    def __post_init__(self):
        self._check_domain()
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "gradient_accumulation_steps": self.gradient_accumulation_steps >= 1,
            "mixed_precision": self.mixed_precision in (None, "no", "bf16", "fp16"),
            "label_smoothing": 0.0 <= self.label_smoothing < 1.0,
            "optim.name": self.optim.name in ("adamw", "sgd"),
            "scheduler.name": self.scheduler.name in ("cosine", "linear", "step", "constant"),
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            key = bad[0]
            value = _get_dotted(self, key)
            raise ValueError(f"{key}={value!r} is invalid. {_HINTS.get(key, '')}".strip())
        for stage in self.unfreeze_schedule:
            if not (stage.train in ("head", "all") or (stage.train.startswith("top:") and stage.train[4:].isdigit())):
                raise ValueError(f"unfreeze_schedule train={stage.train!r} must be 'head', 'top:K' or 'all'.")

    def _check_domain(self) -> None:
        from hftransfer.objectives import normalize_objective
        from hftransfer.training.domain import check_domain_config

        self.objective = normalize_objective(self.objective)
        check_domain_config(self.objective, self.target, self.target_eval, self.model_selection)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any], recipe_defaults: bool = True) -> TrainConfig:
        """Build from plain data; the recipe's default hyperparameters fill what ``data`` leaves out."""
        from hftransfer.recipes import registry

        return _build(cls, registry.with_recipe_defaults(data) if recipe_defaults else data, "")

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
        text = Path(path).read_text(encoding="utf-8")
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: the YAML top level must be a mapping of options; got {type(data).__name__}.")
        return cls.from_dict(apply_overrides(data, overrides or []))


_HINTS = {
    "mixed_precision": "Use 'no', 'bf16' (fast on CPUs with AMX and on recent GPUs) or 'fp16' (GPU).",
    "optim.name": "Use 'adamw' or 'sgd'.",
    "scheduler.name": "Use 'cosine', 'linear', 'step' or 'constant'.",
    "epochs": "Use a positive integer.",
    "batch_size": "Use a positive integer.",
}


def _get_dotted(obj: Any, key: str) -> Any:
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings (values parsed as YAML: numbers, booleans, lists)."""
    data = dict(data)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"Override {item!r} must look like key=value (e.g. optim.lr=3e-4).")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else None
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node[part] = dict(node.get(part) or {})
            node = node[part]
        node[parts[-1]] = value
    return data


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        return data
    if not isinstance(data, dict):
        raise ValueError(f"{prefix.rstrip('.') or 'config'} must be a mapping; received {data!r}.")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"Unknown option(s) {[prefix + u for u in unknown]}; valid options under "
                         f"{prefix.rstrip('.') or 'the top level'}: {sorted(fields)}.")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{prefix}{name}")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        for arg in non_none:
            if dataclasses.is_dataclass(arg) and isinstance(value, dict):
                return _build(arg, value, key + ".")
        return _coerce(non_none[0], value, key) if len(non_none) == 1 else value
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key + ".")
    if origin is list and args and dataclasses.is_dataclass(args[0]):
        return [_build(args[0], v, f"{key}[{i}].") for i, v in enumerate(value or [])]
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    if hint is float and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError as err:
            raise ValueError(f"{key}={value!r} must be a number.") from err
    if hint is int and isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return value


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value
