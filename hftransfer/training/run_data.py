"""What a run derives from its loaded data: class and sampling weights, the weight share across processes, whether
to train on cached backbone features, the train/validation loaders and the data report."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from hftransfer.augment import is_deterministic
from hftransfer.data.report import build_data_report, data_report_lines, write_data_report
from hftransfer.training.feature_cache import cache_key, cached_features, feature_precision
from hftransfer.training.loaders import (
    balanced_sample_weights,
    build_loader,
    inverse_frequency_weights,
    split_inputs,
)


if TYPE_CHECKING:
    from accelerate import Accelerator

    from hftransfer.data import DataConfig, LoadedData
    from hftransfer.modeling import AutoTransfer
    from hftransfer.objectives import Objective
    from hftransfer.training.config import TrainConfig

Log = Callable[[str], None]


def train_labels(data: LoadedData) -> np.ndarray:
    return np.asarray(data.train.with_format("arrow")["label"], dtype=np.int64)


def class_weight_tensor(value: str | list[float] | None, data: LoadedData, device: torch.device,
                        log: Log) -> torch.Tensor | None:
    """``class_weights`` on ``device`` (logged): 'auto' -> inverse train frequency (mean 1), a list -> as given (one
    per class, checked by the pre-flight); None -> unweighted."""
    if value is None:
        return None
    if value == "auto":
        weights = inverse_frequency_weights(train_labels(data), data.num_labels)
    else:
        weights = np.asarray(value, dtype=np.float64)
    log("class weights: " + ", ".join(f"{n}={w:.3g}" for n, w in zip(data.label_names, weights)))
    return torch.tensor(weights, dtype=torch.float32, device=device)


def sample_weights(sampler: str, data: LoadedData) -> np.ndarray | None:
    """Per-row draw weights of ``sampler: balanced`` (None: every row once per epoch)."""
    return balanced_sample_weights(train_labels(data), data.num_labels) if sampler == "balanced" else None


class WeightShare:
    """Rescales a process's class-weighted mean loss so the processes' average is the global batch's weighted mean.

    With class weights, cross-entropy divides by the slice's weight sum; slices with different sums would weigh
    their rows unequally. Factor: local weight sum * processes / global weight sum (1 without weights, on one
    process, or for soft mixup targets, whose mean is over rows).
    """

    def __init__(self, accelerator: Accelerator, class_weights: torch.Tensor | None):
        self.accelerator, self.class_weights = accelerator, class_weights

    def __call__(self, targets: torch.Tensor) -> torch.Tensor | float:
        acc = self.accelerator
        if self.class_weights is None or acc.num_processes == 1 or targets.dim() != 1:
            return 1.0
        local = self.class_weights[targets].sum()
        total = acc.reduce(local.detach().clone(), reduction="sum")
        return local.detach() * acc.num_processes / total.clamp(min=1e-12)


def use_feature_cache(model: AutoTransfer, objective: Objective, augment: str | None) -> tuple[bool, str | None]:
    """Whether the head trains on backbone features computed once (the method asks for it: ``caches_features``,
    and the backbone is frozen), and, when the method asked but cannot have it, why not."""
    method = model.method
    if not method.caches_features:
        return False, None
    if objective.needs_target:
        return False, f"feature cache off: objective {objective.name!r} trains on target batches"
    if method.trains_backbone:
        return False, None
    if model.modality == "image" and not is_deterministic(augment):
        return False, (f"feature cache off: augment={augment!r} is random, so the backbone runs every epoch "
                       "(set augment: none to cache features)")
    return True, None


@dataclass
class TrainEvalLoaders:
    train: DataLoader
    validation: DataLoader
    feature_precision: str | None  # with the feature cache: the precision features were extracted in


def train_eval_loaders(config: TrainConfig, model: AutoTransfer, data: LoadedData, accelerator: Accelerator,
                       feature_mode: bool, mixed_precision: str | None, log: Log) -> TrainEvalLoaders:
    """The training loader (shuffled, seeded per epoch; balanced sampling, length buckets) and the validation one;
    with ``feature_mode``, both over backbone features cached once."""
    cfg = config
    eval_bs = cfg.eval_batch_size or cfg.batch_size
    train = split_inputs(data.train, model, train=not feature_mode, augment=cfg.augment, seed=cfg.seed,
                         cache_mb=cfg.image_cache_mb)
    evaluation = split_inputs(data.validation, model, seed=cfg.seed, cache_mb=cfg.image_cache_mb)
    train_ds, eval_ds, collate = train.dataset, evaluation.dataset, train.collate_fn
    train_len, eval_len = train.lengths if cfg.bucket_by_length else None, evaluation.lengths
    precision = None
    if feature_mode:
        method_cfg = model.method.config
        precision = feature_precision(getattr(method_cfg, "feature_precision", "auto"), mixed_precision,
                                      accelerator.device)
        log(f"feature extraction in {precision}")
        model.to(accelerator.device)
        train_ds, eval_ds = [
            _features(accelerator, model, cfg, name, ds, lengths, split, collate, precision, eval_bs, log)
            for name, ds, lengths, split in (("train", train_ds, train_len, data.train),
                                             ("validation", eval_ds, eval_len, data.validation))]
        train_len = eval_len = collate = None
    return TrainEvalLoaders(
        build_loader(train_ds, cfg.batch_size, shuffle=True, seed=cfg.seed, num_workers=cfg.num_workers,
                     lengths=train_len, collate_fn=collate, sample_weights=sample_weights(cfg.sampler, data)),
        build_loader(eval_ds, eval_bs, shuffle=False, seed=cfg.seed, num_workers=cfg.num_workers, lengths=eval_len,
                     collate_fn=collate),
        precision)


def _features(acc: Accelerator, model: AutoTransfer, cfg: TrainConfig, name: str, dataset, lengths, split, collate,
              precision: str, batch_size: int, log: Log):
    loader = acc.prepare_data_loader(build_loader(dataset, batch_size, shuffle=False, seed=cfg.seed,
                                                  num_workers=cfg.num_workers, lengths=lengths, collate_fn=collate))
    key = cache_key(model, getattr(split, "_fingerprint", str(len(split))), {"split": name, "precision": precision})
    start = time.perf_counter()
    cached = cached_features(acc, model, loader, key, getattr(model.method.config, "cache_dir", None),
                             f"features ({name})", cfg.progress_bar, precision=precision)
    log(f"cached {name} features {tuple(cached.features.shape)} in {time.perf_counter() - start:.1f}s")
    return cached


def write_report(model: AutoTransfer, data: LoadedData, data_config: DataConfig, output_dir: Path,
                 log: Log) -> dict[str, Any]:
    """data_report.json/.md in ``output_dir`` and a summary in the log (call on the main process only)."""
    count_tokens = max_length = None
    if model.modality == "text":
        tok, max_length = model.preprocessor.tokenizer, model.preprocessor.max_length

        def count_tokens(texts: list[str]) -> list[int]:  # verbose=False: no "longer than the maximum" warning
            return [len(ids) for ids in tok(texts, truncation=False, padding=False, verbose=False)["input_ids"]]

    report = build_data_report(data, data_config, max_length, count_tokens)
    write_data_report(report, output_dir)
    for line in data_report_lines(report):
        log(line)
    return report
