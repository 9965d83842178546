"""``TrainConfig``: everything a run needs, as nested dataclasses that load from YAML and ``key=value`` overrides."""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hftransfer.augment import AUGMENTATION_PRESETS
from hftransfer.backbones.pooling import POOLERS
from hftransfer.data import DataConfig
from hftransfer.errors import ConfigurationError, InputFileError
from hftransfer.methods.registry import METHODS
from hftransfer.metrics.classification import classification_metric_names
from hftransfer.objectives import normalize_objective, objective_entry
from hftransfer.recipes import get_recipe, registry
from hftransfer.recipes.examples import example_configs, resolve_config
from hftransfer.training.wise_ft import WiseFTConfig
from hftransfer.utils.config_values import coerce_value, load_yaml
from hftransfer.utils.hub_ids import is_repo_id


OPTIMIZER_NAMES = ("adamw", "sgd")  # hftransfer.training.optim.OPTIMIZERS implements each
SCHEDULER_NAMES = ("cosine", "linear", "step", "constant")  # hftransfer.training.optim.SCHEDULES implements each
MIXED_PRECISION = (None, "no", "bf16", "fp16", "auto")
POOLINGS = (None, *POOLERS)
MODEL_SELECTIONS = ("source", "target_entropy", "target_eval")


def check_values(section: str, obj: Any, rules: dict[str, tuple[bool, str]]) -> None:
    """Raise :class:`ConfigurationError` for the first rule that fails: ``{field: (ok, how to fix)}``."""
    for name, (ok, fix) in rules.items():
        if not ok:
            key = f"{section}.{name}" if section else name
            raise ConfigurationError(f"{key}={getattr(obj, name)!r} is invalid: {fix}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int_or_none(value: Any) -> bool:
    return value is None or (_is_int(value) and value >= 1)


@dataclass
class ModelConfig:
    """The backbone and how it runs."""

    name: str = field(
        default="packaged:efficientnet_lite0",
        metadata={"help": "Any name AutoTransfer.from_pretrained accepts: hub id, timm architecture, folder or "
                          "'packaged:<name>'."},
    )
    revision: str | None = field(default=None, metadata={"help": "Hub branch, tag or commit of the backbone."})
    pretrained: bool = field(
        default=True, metadata={"help": "False: random initialisation (tests, from-scratch baselines)."}
    )
    pooling: str | None = field(
        default=None, metadata={"help": "Transformers pooling: 'cls', 'mean' or 'pooler' (None: per model type)."}
    )
    max_length: int = field(default=128, metadata={"help": "Tokenizer truncation length for text."})
    head_dropout: float = field(default=0.0, metadata={"help": "Dropout before the classification head, in [0, 1)."})
    image_size: int | None = field(
        default=None, metadata={"help": "Train/eval at another resolution than the pretrained one (faster on CPU)."}
    )
    channels_last: bool = field(
        default=True, metadata={"help": "NHWC memory layout for image models (faster convolutions on CPU and GPU)."}
    )
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Recompute activations in backward: much less memory, ~30% slower."}
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Run custom modelling code from a transformers repo (never implicit)."}
    )
    config_overrides: dict[str, Any] = field(default_factory=dict, metadata={"help": (
        "Backbone settings changed before the weights load. transformers: config attributes (e.g. "
        "attention_probs_dropout_prob: 0.0 keeps CPU attention on the fused SDPA kernel, which has no dropout; "
        "hidden_dropout_prob) and attn_implementation; timm: timm.create_model arguments (drop_rate, "
        "drop_path_rate, attn_drop_rate). Saved with the model, so it reloads the same.")})
    cpu_fast_path: bool = field(default=True, metadata={"help": (
        "Training on CPU: dropout masks from a cheaper random draw (same distribution, p rounded to 1/65536) and, "
        "for transformers models on SDPA, attention on the math path with that dropout (SDPA's fused CPU kernel has "
        "no dropout and is slower at short lengths). MiniLM at 128 tokens: 1.4x the forward+backward speed. The "
        "saved model is unchanged; GPUs and inference keep the stock kernels. False: PyTorch's own dropout/SDPA.")})
    compile: bool = field(default=False, metadata={"help": (
        "torch.compile the model (inductor): faster steps after a one-off compile (reported apart as "
        "compile_time_s). Works with LoRA/adapters, gradient checkpointing, bf16, DDP and resume; where it cannot "
        "apply (no C compiler, unsupported platform) the run says why and continues eagerly.")})

    def __post_init__(self) -> None:
        check_values("model", self, {
            "name": (isinstance(self.name, str) and bool(self.name.strip()),
                     "name a backbone, e.g. 'packaged:efficientnet_lite0' or 'timm/resnet18.a1_in1k'."),
            "pooling": (self.pooling in POOLINGS, f"use one of {list(POOLINGS)}."),
            "max_length": (_is_int(self.max_length) and self.max_length >= 1, "use a positive integer."),
            "head_dropout": (0.0 <= self.head_dropout < 1.0, "use a dropout probability in [0, 1)."),
            "image_size": (_positive_int_or_none(self.image_size), "use a positive integer (pixels) or null."),
        })


@dataclass
class OptimConfig:
    """Optimizer and learning rates."""

    name: str = field(default="adamw", metadata={"help": f"Optimizer: one of {list(OPTIMIZER_NAMES)}."})
    lr: float = field(
        default=1e-3, metadata={"help": "Base learning rate (the top of the backbone when layer_decay is set)."}
    )
    head_lr: float | None = field(default=None, metadata={"help": "Learning rate of the head (None: lr)."})
    weight_decay: float = field(
        default=0.01, metadata={"help": "Weight decay; never applied to norms, biases and other 1-d parameters."}
    )
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum (sgd only)."})
    betas: tuple[float, float] = field(default=(0.9, 0.999), metadata={"help": "AdamW betas (adamw only)."})
    layer_decay: float | None = field(
        default=None, metadata={"help": "Layer-wise LR decay: block i gets lr * layer_decay ** (depth - i)."}
    )
    backbone_lr_scale: float = field(
        default=1.0, metadata={"help": "Discriminative LR: multiply every backbone learning rate by this."}
    )
    fused: bool | None = field(
        default=None, metadata={"help": "Fused optimizer kernel; None: on when every parameter allows it."}
    )

    def __post_init__(self) -> None:
        check_values("optim", self, {
            "name": (self.name in OPTIMIZER_NAMES, f"use one of {list(OPTIMIZER_NAMES)}."),
            "lr": (self.lr >= 0, "a learning rate is >= 0 (e.g. 1e-3)."),
            "head_lr": (self.head_lr is None or self.head_lr >= 0, "use a learning rate >= 0, or null for lr."),
            "weight_decay": (self.weight_decay >= 0, "use a weight decay >= 0 (e.g. 0.01)."),
            "momentum": (0.0 <= self.momentum < 1.0, "use a momentum in [0, 1) (e.g. 0.9)."),
            "betas": (len(self.betas) == 2 and all(0.0 <= b < 1.0 for b in self.betas),
                      "use two numbers in [0, 1), e.g. [0.9, 0.999]."),
            "layer_decay": (self.layer_decay is None or 0.0 < self.layer_decay <= 1.0,
                            "use a factor in (0, 1] (e.g. 0.75), or null for none."),
            "backbone_lr_scale": (self.backbone_lr_scale >= 0, "use a factor >= 0 (0 freezes the backbone's LR)."),
        })


@dataclass
class SchedulerConfig:
    """Learning-rate schedule, stepped once per optimizer step."""

    name: str = field(default="cosine", metadata={"help": f"Schedule: one of {list(SCHEDULER_NAMES)}."})
    warmup_steps: int = field(
        default=0, metadata={"help": "Linear warmup in optimizer steps (wins over warmup_ratio when > 0)."}
    )
    warmup_ratio: float = field(default=0.0, metadata={"help": "Linear warmup as a fraction of all optimizer steps."})
    step_size_epochs: float = field(
        default=7.0, metadata={"help": "step: multiply the LR by gamma every this many epochs."}
    )
    gamma: float = field(default=0.1, metadata={"help": "step: decay factor."})
    min_lr_ratio: float = field(default=0.0, metadata={"help": "cosine: final LR as a fraction of the peak."})

    def __post_init__(self) -> None:
        check_values("scheduler", self, {
            "name": (self.name in SCHEDULER_NAMES, f"use one of {list(SCHEDULER_NAMES)}."),
            "warmup_steps": (_is_int(self.warmup_steps) and self.warmup_steps >= 0, "use an integer >= 0."),
            "warmup_ratio": (0.0 <= self.warmup_ratio < 1.0, "use a fraction in [0, 1) (e.g. 0.05)."),
            "step_size_epochs": (self.step_size_epochs > 0, "use a positive number of epochs."),
            "gamma": (0.0 < self.gamma <= 1.0, "use a decay factor in (0, 1] (e.g. 0.1)."),
            "min_lr_ratio": (0.0 <= self.min_lr_ratio <= 1.0, "use a fraction in [0, 1]."),
        })


@dataclass
class UnfreezeStage:
    """One stage of ``unfreeze_schedule``."""

    epoch: int = field(metadata={"help": "The stage starts at this epoch (0-based)."})
    train: str = field(metadata={"help": "What trains: 'head', 'top:K' (top K backbone blocks + head) or 'all'."})

    def __post_init__(self) -> None:
        train = self.train if isinstance(self.train, str) else ""
        check_values("unfreeze_schedule[]", self, {
            "epoch": (_is_int(self.epoch) and self.epoch >= 0, "use an epoch number >= 0."),
            "train": (train in ("head", "all") or (train.startswith("top:") and train[4:].isdigit()),
                      "must be 'head', 'top:K' (e.g. 'top:2') or 'all'."),
        })


@dataclass
class TrainConfig:
    """One fine-tuning run. Every recipe reads this; YAML files under recipes/configs/ fill it in."""

    recipe: str = field(default="full", metadata={"help": "Registered recipe (see `hftransfer recipes`)."})
    method: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "Options of the recipe's method (e.g. lora r, alpha); see --help-config."},
    )
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "The backbone."})
    data: DataConfig = field(
        default_factory=lambda: DataConfig(source="sklearn_digits"),
        metadata={"help": "Where the data is and how to split it."},
    )
    optim: OptimConfig = field(default_factory=OptimConfig, metadata={"help": "Optimizer and learning rates."})
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig, metadata={"help": "Learning-rate schedule."})
    epochs: int = field(default=3, metadata={"help": "Number of passes over the training split."})
    max_steps: int | None = field(
        default=None, metadata={"help": "Stop after this many optimizer steps (smoke tests)."}
    )
    batch_size: int = field(default=32, metadata={"help": "Global batch size (split across processes)."})
    eval_batch_size: int | None = field(default=None, metadata={"help": "Evaluation batch size (None: batch_size)."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Optimizer step every this many batches."})
    max_grad_norm: float | None = field(
        default=1.0, metadata={"help": "Clip the gradient norm to this (None: no clipping)."}
    )
    label_smoothing: float = field(
        default=0.0, metadata={"help": "Label smoothing of the cross-entropy loss, in [0, 1)."}
    )
    mixed_precision: str | None = field(
        default=None, metadata={"help": "'no', 'bf16', 'fp16' (GPU) or 'auto' (image models: the faster of fp32 and "
                                        "bf16, measured in seconds before training; text: bf16 where native); None: "
                                        "from `accelerate launch`, else 'no'."}
    )
    seed: int = field(default=42, metadata={"help": "Seed of weights init, shuffling and augmentation."})
    augment: str | None = field(
        default="default", metadata={"help": "Image augmentation preset: 'none', 'default', 'randaugment', or for "
                                             "orientation-sensitive images (digits, text) 'upright' / "
                                             "'randaugment_upright' (no flip, crops keep >= 50%)."}
    )
    mixup_alpha: float = field(default=0.0, metadata={"help": "Mixup alpha for images (0 disables)."})
    cutmix_alpha: float = field(default=0.0, metadata={"help": "CutMix alpha for images (0 disables)."})
    unfreeze_schedule: list[UnfreezeStage] = field(
        default_factory=list, metadata={"help": "Stages, e.g. [{epoch: 0, train: head}, {epoch: 2, train: all}]."}
    )
    early_stopping_patience: int | None = field(
        default=None, metadata={"help": "Epochs without improvement before stopping (None: never)."}
    )
    metric_for_best: str = field(
        default="accuracy",
        metadata={"help": "Validation metric that picks the best checkpoint (e.g. accuracy, f1_macro, loss)."},
    )
    greater_is_better: bool = field(
        default=True, metadata={"help": "Whether a higher metric_for_best is better (false for loss)."}
    )
    output_dir: str = field(
        default="outputs/run", metadata={"help": "Folder for the model, metrics, logs and checkpoints."}
    )
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace a finished run in output_dir."})
    checkpoint_every_steps: int | None = field(
        default=None, metadata={"help": "Mid-epoch checkpoints for resume (one is also kept every epoch)."}
    )
    keep_checkpoints: int = field(default=2, metadata={"help": "How many resume checkpoints to keep."})
    resume: bool = field(
        default=True,
        metadata={"help": "Continue from the newest checkpoint in output_dir/checkpoints if there is one."},
    )
    num_workers: int = field(default=0, metadata={"help": "DataLoader workers (0 is fastest on small CPUs)."})
    image_cache_mb: float = field(
        default=2048,
        metadata={"help": "Keep decoded images in memory up to this size per split (0: decode every epoch)."},
    )
    bucket_by_length: bool = field(
        default=True, metadata={"help": "Text: batch similar lengths together (less padding)."}
    )
    log_every_steps: int = field(default=10, metadata={"help": "Tracker logging interval in optimizer steps."})
    report_to: list[str] = field(default_factory=list, metadata={"help": "Trackers, e.g. ['tensorboard']."})
    progress_bar: bool = field(default=True, metadata={"help": "Show progress bars and per-epoch lines."})
    class_weights: str | list[float] | None = field(
        default=None,
        metadata={"help": "Cross-entropy class weights: 'auto' (inverse train frequency, mean 1) or one weight per "
                          "class in label order; None: unweighted."},
    )
    sampler: str = field(
        default="random",
        metadata={"help": "'random' (shuffled, every row once per epoch) or 'balanced' (rows drawn with replacement "
                          "so every class is equally likely; deterministic per seed and epoch)."},
    )
    push_to_hub: bool = field(
        default=False, metadata={"help": "Push the best model to the hub at the end (needs hub_repo_id)."}
    )
    hub_repo_id: str | None = field(default=None, metadata={"help": "Hub repo 'namespace/name' to push to."})
    hub_private: bool = field(default=False, metadata={"help": "Create the hub repo as private."})
    hub_revision: str | None = field(default=None, metadata={"help": "Hub branch to push to."})
    wise_ft: WiseFTConfig | None = field(default=None, metadata={"help": (
        "WiSE-FT: at the end, interpolate the run's start (lp_ft: pretrained backbone + probe head) and its best "
        "model, choose the alpha on validation and save that model; {} takes the default alphas. None: off.")})
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

        check_values("", self, {
            "epochs": (_is_int(self.epochs) and self.epochs >= 1, "use a positive integer."),
            "max_steps": (_positive_int_or_none(self.max_steps), "use a positive integer or null."),
            "batch_size": (_is_int(self.batch_size) and self.batch_size >= 1, "use a positive integer."),
            "eval_batch_size": (_positive_int_or_none(self.eval_batch_size), "use a positive integer or null."),
            "gradient_accumulation_steps": (_is_int(self.gradient_accumulation_steps)
                                            and self.gradient_accumulation_steps >= 1, "use a positive integer."),
            "max_grad_norm": (self.max_grad_norm is None or self.max_grad_norm > 0, "use a norm > 0 or null."),
            "label_smoothing": (0.0 <= self.label_smoothing < 1.0, "use a fraction in [0, 1) (e.g. 0.1)."),
            "mixed_precision": (self.mixed_precision in MIXED_PRECISION,
                                "use 'no', 'bf16' (fast on CPUs with AMX, recent GPUs), 'fp16' (GPU) or 'auto'."),
            "augment": (self.augment is None or self.augment in AUGMENTATION_PRESETS,
                        f"use one of {sorted(AUGMENTATION_PRESETS)}."),
            "mixup_alpha": (self.mixup_alpha >= 0, "use an alpha >= 0 (0 disables)."),
            "cutmix_alpha": (self.cutmix_alpha >= 0, "use an alpha >= 0 (0 disables)."),
            "early_stopping_patience": (_positive_int_or_none(self.early_stopping_patience),
                                        "use a positive number of epochs or null."),
            "checkpoint_every_steps": (_positive_int_or_none(self.checkpoint_every_steps),
                                       "use a positive number of steps or null."),
            "keep_checkpoints": (_is_int(self.keep_checkpoints) and self.keep_checkpoints >= 1,
                                 "keep at least 1 checkpoint."),
            "num_workers": (_is_int(self.num_workers) and self.num_workers >= 0, "use an integer >= 0."),
            "image_cache_mb": (self.image_cache_mb >= 0, "use a size in MB >= 0 (0 disables the cache)."),
            "log_every_steps": (_is_int(self.log_every_steps) and self.log_every_steps >= 1,
                                "use a positive integer."),
            "report_to": (isinstance(self.report_to, list) and all(isinstance(r, str) for r in self.report_to),
                          "use a list of tracker names, e.g. ['tensorboard']."),
            "class_weights": (_valid_class_weights(self.class_weights),
                              "use 'auto' (inverse class frequency), a list of non-negative weights (one per class, "
                              "in label order) or null."),
            "sampler": (self.sampler in SAMPLERS, f"use one of {list(SAMPLERS)} (balanced: class-balanced sampling "
                                                  "with replacement)."),
            "hub_repo_id": (self.hub_repo_id is None or is_repo_id(self.hub_repo_id),
                            "use 'namespace/name' (letters, digits, '-', '_', '.')."),
        })

        metrics = ["loss", *classification_metric_names()]
        check_values("", self, {"metric_for_best": (self.metric_for_best in metrics, f"use one of {metrics}.")})
        if self.push_to_hub and not self.hub_repo_id:
            raise ConfigurationError("push_to_hub=true needs hub_repo_id=<namespace/name>; set hub_repo_id or "
                                     "push_to_hub=false.")
        self.method_config()  # unknown or invalid method options fail here, before any data or model is loaded

    def method_config(self) -> Any:
        """The recipe's method config built from ``method`` (raises on unknown options or invalid values)."""

        entry = METHODS[get_recipe(self.recipe).method]
        return entry.config_cls.from_dict(self.method, context=f"recipe={self.recipe!r}")

    def _check_domain(self) -> None:
        """Errors before anything is loaded: an objective that needs target data without any, a selection rule that
        needs what is missing."""
        self.objective = normalize_objective(self.objective)
        entry = objective_entry(self.objective["name"])
        if entry.objective_cls.needs_target and self.target is None:
            raise ConfigurationError(
                f"objective.name={entry.name!r} learns from unlabelled target data but the config has no target: add "
                "`target: {source: <folder, CSV or .npz of the target domain>}` or use objective.name=source_only.")
        if self.model_selection not in MODEL_SELECTIONS:
            raise ConfigurationError(f"model_selection={self.model_selection!r} is invalid; use one of "
                                     f"{list(MODEL_SELECTIONS)} "
                                     "('source': held-out source validation, the default).")
        if self.model_selection == "target_entropy" and self.target is None:
            raise ConfigurationError("model_selection='target_entropy' needs `target:` (unlabelled target data).")
        if self.model_selection == "target_eval" and self.target_eval is None:
            raise ConfigurationError("model_selection='target_eval' selects on labelled target data and needs "
                                     "`target_eval:`; the default 'source' needs no target labels.")

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any], recipe_defaults: bool = True, modality: str | None = None
                  ) -> TrainConfig:
        """Build from plain data; the recipe's default hyperparameters (for a ``modality`` backbone: "text" or
        "image", when known) fill what ``data`` leaves out."""
        config = _build(cls, registry.with_recipe_defaults(data, modality) if recipe_defaults else data, "")
        # What the user set, so the trainer can add the recipe's per-family defaults once the modality is known.
        config._user_values = copy.deepcopy(data) if recipe_defaults and modality is None else None
        return config

    def for_modality(self, modality: str) -> TrainConfig:
        """This config with the recipe's defaults for a ``modality`` backbone filled in; ``self`` when nothing changes
        (the config was not built from user values, or the recipe has no per-family defaults)."""
        user = getattr(self, "_user_values", None)
        if user is None or not get_recipe(self.recipe).family_defaults.get(modality):
            return self
        return TrainConfig.from_dict(user, modality=modality)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
        return cls.from_dict(apply_overrides(read_yaml_config(path), overrides or []))


def config_help() -> str:
    """Every option of a training config with its type, default and help text (``hftransfer train --help-config``).

    Generated from the dataclass fields' ``metadata["help"]``, so it cannot drift from the code.
    """
    lines = ["Training config options (YAML keys; dotted keys as key=value overrides):", ""]
    lines += _field_lines(TrainConfig, "", skip=("method",))
    for name, entry in sorted(METHODS.items()):
        lines += ["", f"method.* options of method {name!r} ({entry.config_cls.__name__}):"]
        lines += _field_lines(entry.config_cls, "method.") or ["  (none)"]
    return "\n".join(lines)


SAMPLERS = ("random", "balanced")


def _valid_class_weights(value: Any) -> bool:
    if value is None or value == "auto":
        return True
    return isinstance(value, (list, tuple)) and bool(value) and all(
        isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0 for w in value) and any(value)


def _field_lines(cls: type, prefix: str, skip: tuple[str, ...] = ()) -> list[str]:
    rows = option_rows(cls, prefix, skip)
    return [f"  {key} ({kind}, default {default!r}): {text}" for key, kind, default, text in rows]


def option_rows(cls: type, prefix: str = "", skip: tuple[str, ...] = ()) -> list[tuple[str, str, Any, str]]:
    """``(dotted key, type, default, help)`` of every field of a config dataclass, nested sections flattened: the
    source of ``--help-config`` and of the documentation's configuration reference. An optional section (``wise_ft``,
    ``target``) gets its own row, then its options unless a section of the same class is listed already."""
    hints = typing.get_type_hints(cls)
    rows: list[tuple[str, str, Any, str]] = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        hint, key = hints[f.name], f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hint):
            rows += option_rows(hint, f"{key}.")
            continue
        optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
        section = next((a for a in typing.get_args(hint) if optional and dataclasses.is_dataclass(a)), None)
        same_as = next((g.name for g in dataclasses.fields(cls) if hints[g.name] is section), None)
        kind = getattr(hint, "__name__", None) if isinstance(hint, type) else str(hint).replace("typing.", "")
        if section is not None:
            kind = f"{section.__name__} or None" + (f"; options as {same_as}.*" if same_as else "")
        rows.append((key, kind, _field_default(f), f.metadata.get("help", "")))
        if section is not None and same_as is None:
            rows += option_rows(section, f"{key}.")
    return rows


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return "required"


def read_yaml_config(path: str | Path) -> dict[str, Any]:
    """The plain options of a YAML config file or shipped example (not yet merged with recipe defaults)."""

    if not resolve_config(path).is_file():
        raise InputFileError(f"config={str(path)!r} is not a file or a shipped example config. Pass a YAML file, or "
                             f"one of the examples {sorted(example_configs())} (`hftransfer recipes` lists them).")
    try:
        data = load_yaml(resolve_config(path).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigurationError(f"config={str(path)!r} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigurationError(
            f"config={str(path)!r}: the YAML top level must be a mapping of options; got {type(data).__name__}."
        )
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings (values parsed as YAML 1.2: numbers, true/false, lists; ``no`` stays a
    string and a boolean option reads it as false)."""
    data = dict(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigurationError(f"Override {item!r} must look like key=value (e.g. optim.lr=3e-4).")
        key, raw = item.split("=", 1)
        value = load_yaml(raw) if raw != "" else None
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
        raise ConfigurationError(f"{prefix.rstrip('.') or 'config'} must be a mapping; received {data!r}.")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigurationError(f"Unknown option(s) {[prefix + u for u in unknown]}; valid options under "
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
        return coerce_value(hint, value, key)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key + ".")
    if origin is list and args and dataclasses.is_dataclass(args[0]):
        return [_build(args[0], v, f"{key}[{i}].") for i, v in enumerate(value or [])]
    return coerce_value(hint, value, key)


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value
