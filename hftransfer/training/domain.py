"""Domain adaptation in a run: the unlabelled target set, its resumable endless batch stream, the labelled target
evaluation split, and :class:`DomainRun`, which owns all of them for the engine (target views, per-epoch target
numbers, the metrics.json summary, the model-selection key). The config's checks live in ``training/config.py``."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from hftransfer.data import DataConfig, DataError, LoadedData, load_data
from hftransfer.data.images import encode_image_arrays, image_dataset, scan_class_folders
from hftransfer.data.sources import ARRAY_KEYS
from hftransfer.data.tables import TABLE_SUFFIXES, read_table, text_dataset
from hftransfer.errors import AdaptationWarning, ConfigurationError
from hftransfer.objectives import StepInfo, get_objective
from hftransfer.objectives.base import STRONG_SUFFIX, adaptation_start
from hftransfer.training.loaders import EpochBatchSampler, ImageDataset, intra_op_threads, split_inputs, split_loader
from hftransfer.training.run_data import WeightShare
from hftransfer.training.scoring import score
from hftransfer.utils.io import read_json


if TYPE_CHECKING:
    from accelerate import Accelerator

    from hftransfer.modeling import AutoTransfer
    from hftransfer.objectives import Objective
    from hftransfer.training.config import TrainConfig

# (logits, labels, mean loss) of a prepared evaluation loader, gathered across processes
Predict = Callable[[Any], tuple[np.ndarray, np.ndarray, float]]


UNLABELLED = -1  # label id of target rows: never read as a label
TARGET_SEED_OFFSET = 7919  # target order and augmentations are drawn independently of the source's


def read_baseline(path: str) -> dict[str, Any]:
    """Source and target metrics of a finished ``source_only`` run (its output_dir or metrics.json)."""
    file = Path(path) / "metrics.json" if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise ConfigurationError(f"source_only_baseline={path!r} is not a finished run: {str(file)!r} is missing. "
                                 "Point it at the output_dir of a finished objective=source_only run.")
    metrics = read_json(file)
    name = (metrics.get("objective") or {}).get("name", "source_only")
    if name != "source_only":
        raise ConfigurationError(f"source_only_baseline={path!r} is a {name!r} run; it must be a source_only run.")
    scalars = lambda d: {k: v for k, v in (d or {}).items() if isinstance(v, (int, float))}  # noqa: E731
    return {"run": str(file.parent), "source": scalars(metrics.get("final_eval")),
            "target_eval": scalars(metrics.get("target_eval"))}


# --- loading --------------------------------------------------------------------------------------------------------


def _unlabelled_source(config: DataConfig, label_names: list[str], modality: str) -> datasets.Dataset | None:
    """A flat image folder, a .npz without labels, or a table without a label column, as a dataset whose labels are
    all ``UNLABELLED``; None when ``config`` names labelled data (read by the ordinary loaders)."""

    where = config.source or config.train
    if where is None:
        return None
    path = Path(where)
    if path.is_dir():
        classes, stray = scan_class_folders(path)
        if stray and not any(classes.values()):
            return image_dataset([str(p) for p in stray], np.full(len(stray), UNLABELLED), label_names)
        return None
    if path.suffix == ".npz" and path.is_file():
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.files)
            if any(k in keys for k in ARRAY_KEYS["y"]):
                return None
            x_key = next((k for k in ARRAY_KEYS["x"] if k in keys), None)
            if x_key is None:
                raise DataError(f"target {str(path)!r} has keys {keys}; put the target inputs under one of "
                                f"{list(ARRAY_KEYS['x'])}.")
            x = npz[x_key]
        if x.dtype.kind in "US":
            return text_dataset([[str(t) for t in x]], np.full(len(x), UNLABELLED), label_names)
        rows = encode_image_arrays(x, x_key)
        return image_dataset(rows, np.full(len(rows), UNLABELLED), label_names)
    if path.is_file() and path.suffix.lower() in TABLE_SUFFIXES and modality == "text":
        table = read_table(path, TABLE_SUFFIXES[path.suffix.lower()])
        if config.label_column in table.columns:
            return None
        columns = config.text_columns
        missing = [c for c in columns if c not in table.columns]
        if missing:
            raise DataError(f"target {str(path)!r} lacks text column(s) {missing}; it has {list(table.columns)}. "
                            "Set target.text_column.")
        texts = [table[c].fillna("").astype(str).tolist() for c in columns]
        return text_dataset(texts, np.full(len(table), UNLABELLED), label_names)
    return None


def _relabelled(split: datasets.Dataset, names: list[str], source_names: list[str]) -> datasets.Dataset:
    if names == source_names:
        return split
    lookup = np.asarray([source_names.index(n) for n in names])
    ids = lookup[split.with_format("arrow")["label"].to_numpy()]
    features = split.features.copy()
    features["label"] = datasets.ClassLabel(names=source_names)
    return split.remove_columns("label").add_column("label", ids.tolist()).cast(features)


def load_target(config: DataConfig, source: LoadedData, key: str, labelled: bool) -> datasets.Dataset:
    """The whole target set named by ``config`` (train and validation parts together), in the source's label ids.

    ``labelled=False`` (the ``target:`` stream): labels may be absent and are replaced by ``UNLABELLED``.
    ``labelled=True`` (``target_eval:``): labels are required. Either way a label set other than the source's is an
    error, and so is an empty set or another modality.
    """
    split = None if labelled else _unlabelled_source(config, source.label_names, source.modality)
    if split is None:
        loaded = load_data(config)
        if loaded.modality != source.modality:
            raise ConfigurationError(f"{key} is {loaded.modality} data but the source is {source.modality}.")
        extra = sorted(set(loaded.label_names) - set(source.label_names))
        if extra:
            raise ConfigurationError(
                f"{key} has classes {extra} that the source ({source.description.name}) lacks; source classes: "
                f"{source.label_names}. Domain adaptation needs one label set: drop those classes or fix the labels.")
        split = datasets.concatenate_datasets([_relabelled(s, loaded.label_names, source.label_names)
                                               for s in (loaded.train, loaded.validation)])
        if not labelled:
            split = split.remove_columns("label").add_column("label", [UNLABELLED] * len(split)).cast(
                split.features)
    if len(split) == 0:
        raise DataError(f"{key} ({config.source or config.train!r}) holds no usable rows; point it at the target "
                        "domain's data.")
    return split


# --- the target stream ----------------------------------------------------------------------------------------------


class TwoViewImageDataset(Dataset):
    """Target images as ``pixel_values`` (weak view) and, with a strong transform, ``pixel_values_strong``.

    Both views are seeded per sample (like :class:`ImageDataset`) so a resumed run replays them; decoding is shared.
    """

    def __init__(self, data, weak_transform, strong_transform=None, seed: int = 0, cache_mb: float = 0):
        self.weak = ImageDataset(data, weak_transform, seed=seed, cache_mb=cache_mb)
        self.strong = None
        if strong_transform is not None:
            self.strong = ImageDataset(data, strong_transform, seed=seed + 1)
            self.strong._decoded = self.weak._decoded  # one decoded-image cache for both views

    def __len__(self) -> int:
        return len(self.weak)

    def __getitems__(self, keys: list) -> list[dict[str, Any]]:
        with intra_op_threads(1):
            return [self[key] for key in keys]

    def __getitem__(self, key) -> dict[str, Any]:
        item = self.weak[key]
        if self.strong is not None:
            item["pixel_values" + STRONG_SUFFIX] = self.strong[key]["pixel_values"]
        return item


class TargetStream:
    """Endless, seeded batches of the target set; ``state_dict`` (epoch, position) resumes it exactly.

    Each global batch of ``batch_size`` rows is sliced per process like ``accelerate``'s ``split_batches``. Batches
    are full (the short remainder of an epoch is dropped) so every process gets the same number of rows.
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, device: torch.device, num_processes: int = 1,
                 process_index: int = 0, num_workers: int = 0, collate_fn=None):
        if len(dataset) < batch_size:
            raise DataError(f"target has {len(dataset)} rows, fewer than batch_size={batch_size}; use a smaller "
                            "batch_size or more target data.")
        self.dataset, self.batch_size, self.seed, self.device = dataset, batch_size, seed, device
        self.num_processes, self.process_index = num_processes, process_index
        self.num_workers, self.collate_fn = num_workers, collate_fn
        self.epoch, self.position = 0, 0
        self._iterator = None

    def __len__(self) -> int:
        return len(self.dataset) // self.batch_size

    def __iter__(self) -> TargetStream:
        return self

    def _start(self) -> None:
        tagged = isinstance(self.dataset, (ImageDataset, TwoViewImageDataset))
        sampler = EpochBatchSampler(len(self.dataset), self.batch_size, shuffle=True, seed=self.seed,
                                    tag_epoch=tagged)
        sampler.use_epoch(self.epoch)
        batches = [b for b in sampler if len(b) == self.batch_size][self.position:]
        per = self.batch_size // self.num_processes
        mine = [b[self.process_index * per:(self.process_index + 1) * per] for b in batches]
        self._iterator = iter(DataLoader(self.dataset, batch_sampler=mine, num_workers=self.num_workers,
                                         collate_fn=self.collate_fn, generator=torch.Generator().manual_seed(0)))

    def __next__(self) -> dict[str, torch.Tensor]:
        if self._iterator is None:
            self._start()
        try:
            batch = next(self._iterator)
        except StopIteration:
            self.epoch, self.position = self.epoch + 1, 0
            self._start()
            batch = next(self._iterator)
        self.position += 1
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items() if k != "labels"}

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._iterator = None


def prediction_entropy(logits: np.ndarray) -> float:
    """Mean entropy (nats) of the softmax predictions: low when the model is confident on the target."""
    z = torch.as_tensor(logits, dtype=torch.float64)
    logp = z.log_softmax(-1)
    return float(-(logp.exp() * logp).sum(-1).mean())



def adaptation_check(history: list[dict[str, Any]], selected: float | None, best_epoch: int | None,
                     warmup_epochs: list[int], metric: str, greater: bool,
                     baseline: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The labelled target split (``target_eval``, reported only) before the adaptation and for the model the run
    delivers (``selected``: the best epoch's, or its WiSE-FT mix).

    "Before" is the run's own model at the end of the source warm-up (its last warm-up epoch), or else the
    ``source_only_baseline`` run's target number. Source validation cannot see an adaptation that hurts the target;
    this says so when a few target labels can. None when there is nothing to compare."""
    if selected is None:
        return None
    key = f"target_eval_{metric}"
    rows = {row["epoch"]: row for row in history if key in row}
    if warmup_epochs and warmup_epochs[-1] in rows:
        last = warmup_epochs[-1]
        before, source = rows[last][key], {"before_from": "source_warmup", "before_epoch": last}
    elif baseline is not None and metric in baseline.get("target_eval", {}):
        before, source = baseline["target_eval"][metric], {"before_from": "source_only_baseline"}
    else:
        return None
    change = selected - before
    hurt = change < 0 if greater else change > 0
    return {"split": "target_eval", "metric": metric, "before_adaptation": before, **source, "selected": selected,
            "selected_epoch": best_epoch, "change": change, "adaptation_hurt": bool(hurt)}


def before_adaptation_label(check: dict[str, Any]) -> str:
    """Where an :func:`adaptation_check`'s "before" number comes from, in words."""
    if check["before_from"] == "source_warmup":
        return f"the end of the source warm-up, epoch {check['before_epoch']}"
    return "the source_only_baseline run"


def selection_key(config: TrainConfig) -> tuple[str, bool]:
    """The history key that picks the best checkpoint and whether higher is better."""
    if config.model_selection == "target_entropy":
        return "target_entropy", False
    if config.model_selection == "target_eval":
        return f"target_eval_{config.metric_for_best}", config.greater_is_better
    return f"eval_{config.metric_for_best}", config.greater_is_better


class DomainRun:
    """A run's target domain, for the engine: the target stream the objective reads (with the views it declares),
    the eval-view target loader (entropy-based selection), the labelled ``target_eval`` loader, their per-epoch numbers
    and the metrics.json summary. Without ``target:`` / ``target_eval:`` it holds nothing and adds only the objective
    description to the summary."""

    def __init__(self, config: TrainConfig, objective: Objective, log: Callable[[str], None], warn: bool = True):
        self.config, self.objective, self._log, self._warn = config, objective, log, warn
        self.logs: dict[str, float] = {}  # the last micro-batch's loss parts (to trackers with report_to)
        self.adaptation_start: int | None = None  # the first step with the adaptation term on (set by plan())
        self.baseline = read_baseline(config.source_only_baseline) if config.source_only_baseline else None
        self.stream: TargetStream | None = None
        self.entropy_loader = None  # the unlabelled target in the eval view (model_selection=target_entropy)
        self.eval_loader = None  # labelled target_eval
        self.sizes: dict[str, int] = {}
        self.label_names: list[str] = []
        # The last target_eval pass (epoch, logits, labels, loss): the summary reuses it when that epoch is the best.
        self._last_eval: tuple[int | None, np.ndarray, np.ndarray, float] | None = None

    @classmethod
    def for_run(cls, config: TrainConfig, model: AutoTransfer, class_weights: torch.Tensor | None,
                accelerator: Accelerator, log: Callable[[str], None]) -> DomainRun:
        """Build the run's objective (it may reshape the model, e.g. a bottleneck in the head, before the optimizer)
        and the domain run that feeds it."""
        objective = get_objective(config.objective, model.modality)  # the user's options over the modality's
        objective.label_smoothing = config.label_smoothing
        # class_weights (auto or given) weigh the supervised part; the share keeps N processes equal to one.
        objective.class_weight = class_weights
        objective.weight_share = WeightShare(accelerator, class_weights)
        objective.check_model(model)
        objective.prepare_model(model)
        if objective.needs_target:
            log(f"objective: {objective.to_dict()}")
        return cls(config, objective, log, warn=accelerator.is_main_process)

    def bind(self, accelerator: Accelerator, model: torch.nn.Module) -> None:
        """Prepare the objective's own modules (a discriminator) and hand it the unwrapped model (after
        ``accelerator.prepare`` of the model)."""
        modules = {name: accelerator.prepare_model(module)
                   for name, module in self.objective.trainable_modules().items()}
        self.objective.bind(modules, accelerator.unwrap_model(model), accelerator.device)

    def plan(self, total_steps: int) -> None:
        """Record (and log) the optimizer step at which the source warm-up ends and the adaptation term switches on."""
        if not self.objective.needs_target:
            return
        self.adaptation_start = adaptation_start(self.objective.config.source_warmup, total_steps)
        if self.adaptation_start:
            self._log(f"objective {self.objective.name}: source warm-up for the first {self.adaptation_start} of "
                      f"{total_steps} optimizer steps (objective.source_warmup="
                      f"{self.objective.config.source_warmup}); the adaptation term switches on at step "
                      f"{self.adaptation_start}")

    def within_warmup(self, global_step: int) -> bool:
        """True for an epoch that ended at ``global_step`` before any adaptation step ran: its model is the source-only
        model the objective was asked to adapt, so it is no candidate for the best model (nor counted by early
        stopping)."""
        return bool(self.adaptation_start) and global_step <= self.adaptation_start

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor], targets: torch.Tensor,
             step: StepInfo) -> torch.Tensor:
        """The objective's loss on a source batch and the next target batch (none without a target stream); during
        the source warm-up the source loss alone, with no target batch drawn."""
        adapting = self.objective.adaptation_step(step)
        if adapting is None:
            out = self.objective.warmup_loss(model, batch, targets)
        else:
            if adapting.step == 0 and self.adaptation_start and self.logs.get("adapting") != 1.0:
                self._log(f"objective {self.objective.name}: source warm-up over; adaptation term on from step "
                          f"{step.step}")
            out = self.objective.compute_loss(model, batch, targets, self.next_batch(), adapting)
        self.logs = {**out.logs, "adapting": float(adapting is not None)} if self.objective.needs_target else out.logs
        return out.loss

    def setup(self, accelerator: Accelerator, model: AutoTransfer, data: LoadedData) -> None:
        """Load the target data and build the stream and loaders (before ``accelerator.prepare`` of the model)."""
        cfg, acc = self.config, accelerator
        self.label_names = list(data.label_names)
        if cfg.target is None and cfg.target_eval is None:
            return
        with acc.main_process_first():
            target = load_target(cfg.target, data, "target", labelled=False) if cfg.target else None
            target_eval = (load_target(cfg.target_eval, data, "target_eval", labelled=True)
                           if cfg.target_eval else None)
        self.sizes = {"target": len(target) if target is not None else 0,
                      "target_eval": len(target_eval) if target_eval is not None else 0}
        self._log(f"target data: {self.sizes['target']} unlabelled rows, {self.sizes['target_eval']} "
                  "labelled evaluation rows (never used for model selection unless model_selection=target_eval)")
        if target is not None and self.objective.needs_target:
            self.stream = self._stream(target, acc, model)
        if target is not None and cfg.model_selection == "target_entropy":
            self.entropy_loader = self._eval_loader(target, acc, model)
        if target_eval is not None:
            self.eval_loader = self._eval_loader(target_eval, acc, model)

    def _stream(self, target: datasets.Dataset, acc: Accelerator, model: AutoTransfer) -> TargetStream:
        cfg = self.config
        seed = cfg.seed + TARGET_SEED_OFFSET
        collate = None
        if model.modality == "image":
            views = self.objective.target_views  # the views the objective declares, with their augmentation
            weak, strong = (model.transform(train=True, augment=views[v] or cfg.augment) if v in views else None
                            for v in ("weak", "strong"))
            dataset = TwoViewImageDataset(target, weak, strong, seed=seed, cache_mb=cfg.image_cache_mb)
        else:
            text = split_inputs(target, model)
            dataset, collate = text.dataset, text.collate_fn
        return TargetStream(dataset, cfg.batch_size, seed, acc.device, acc.num_processes, acc.process_index,
                            cfg.num_workers, collate)

    def _eval_loader(self, split: datasets.Dataset, acc: Accelerator, model: AutoTransfer):
        cfg = self.config
        return acc.prepare_data_loader(split_loader(
            split, model, cfg.eval_batch_size or cfg.batch_size, seed=cfg.seed, num_workers=cfg.num_workers,
            cache_mb=cfg.image_cache_mb))

    def next_batch(self) -> dict[str, torch.Tensor] | None:
        """The next target batch for the objective (None when it reads no target)."""
        return next(self.stream) if self.stream is not None else None

    def state_dict(self) -> dict[str, int] | None:
        return self.stream.state_dict() if self.stream is not None else None

    def load_state_dict(self, state: dict[str, int] | None) -> None:
        if self.stream is not None and state is not None:
            self.stream.load_state_dict(state)

    def epoch_metrics(self, predict: Predict, epoch: int | None = None) -> dict[str, float]:
        """Per-epoch target numbers for the history: the target prediction entropy and labelled target metrics."""
        row: dict[str, float] = {}
        if self.entropy_loader is not None:
            logits, _, _ = predict(self.entropy_loader)
            row["target_entropy"] = prediction_entropy(logits)
        if self.eval_loader is not None:
            logits, labels, loss = predict(self.eval_loader)
            self._last_eval = (epoch, logits, labels, loss)
            metrics = score(logits, labels, loss, self.label_names)
            row.update({f"target_eval_{k}": v for k, v in metrics.items()})
        return row

    def summary(self, predict: Predict, best_epoch: int | None = None,
                history: list[dict[str, Any]] = (), mixed: bool = False) -> dict[str, Any]:
        """What metrics.json says about the objective and the target domain (``predict`` runs the best model; the
        last epoch's target_eval pass is reused when ``best_epoch`` is that epoch, unless ``mixed``: the model in
        memory is then a WiSE-FT mix, scored afresh; ``history`` names the epochs that ended within the source
        warm-up)."""
        cfg = self.config
        key, _ = selection_key(cfg)
        objective = self.objective.to_dict()
        if self.adaptation_start is not None:
            objective["adaptation_start_step"] = self.adaptation_start
        skipped = [row["epoch"] for row in history if self.within_warmup(row["step"])]
        if skipped:
            objective["warmup_epochs_not_selected"] = skipped
        out: dict[str, Any] = {"objective": objective, "model_selection": cfg.model_selection,
                               "selected_on": key,
                               "selection_uses_target_labels": cfg.model_selection == "target_eval"}
        if self.baseline is not None:
            out["source_only_baseline"] = self.baseline
        if cfg.target is None and cfg.target_eval is None:
            return out
        out["target_data"] = dict(self.sizes)
        if self.entropy_loader is not None:
            logits, _, _ = predict(self.entropy_loader)
            out["target_entropy"] = prediction_entropy(logits)
        if self.eval_loader is not None:
            cached = self._last_eval
            if cached is not None and best_epoch is not None and cached[0] == best_epoch and not mixed:
                _, logits, labels, loss = cached  # the model that made them is the best one
            else:
                logits, labels, loss = predict(self.eval_loader)
            out["target_eval"] = {
                **score(logits, labels, loss, self.label_names, per_class=True),
                "note": "labelled target data: reported only" + (
                    "" if cfg.model_selection != "target_eval" else "; ALSO USED FOR MODEL SELECTION (opt-in)"),
            }
            check = adaptation_check(list(history), out["target_eval"].get(cfg.metric_for_best), best_epoch,
                                     skipped, cfg.metric_for_best, cfg.greater_is_better,
                                     self.baseline) if self.objective.needs_target else None
            if check is not None:
                out["adaptation_check"] = check
                self._log_check(check)
        return out

    def _log_check(self, check: dict[str, Any]) -> None:
        metric, before, after = check["metric"], check["before_adaptation"], check["selected"]
        if check["adaptation_hurt"]:
            message = (f"adaptation lowered the labelled target split's {metric} from {before:.4g} "
                       f"({before_adaptation_label(check)}) to {after:.4g} (the selected model, epoch "
                       f"{check['selected_epoch']}). Source validation cannot see this, and the target labels did "
                       "not choose the model. On a far shift try objective.bottleneck_dim: null, or keep the "
                       "source-only model (docs/how-to/domain-adaptation.md).")
            self._log(f"WARNING: {message}")
            if self._warn:
                warnings.warn(message, AdaptationWarning, stacklevel=2)
        else:
            self._log(f"target_eval {metric}: {before:.4g} ({before_adaptation_label(check)}) -> {after:.4g} after "
                      f"adaptation (epoch {check['selected_epoch']})")
