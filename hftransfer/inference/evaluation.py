"""`evaluate`: score a saved or hub model on new labelled data, on one process or many (`accelerate launch`)."""

from __future__ import annotations

import csv
import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from hftransfer.data import DataConfig
from hftransfer.data.errors import DataError
from hftransfer.data.labelled_split import load_labelled_split
from hftransfer.errors import ConfigurationError
from hftransfer.hub.card import DatasetInfo, add_eval_results
from hftransfer.hub.fetch import fetch_file
from hftransfer.metrics import (
    classification_report,
    compute_classification_metrics,
    confusion_matrix,
    format_report_markdown,
)
from hftransfer.metrics.plots import plot_confusion_matrix
from hftransfer.modeling import AutoTransfer
from hftransfer.utils.compile import compile_for_inference
from hftransfer.utils.io import atomic_directory, write_json

from .predict import load_model_for_inference


DATA_OPTIONS = ("format", "text_column", "label_column", "image_column", "label_names", "hub_subset", "on_bad_data",
                "verify_images", "name")


@dataclass
class EvaluationResult:
    """What `evaluate` computed and where it wrote it."""

    metrics: dict[str, float]  # loss, accuracy, f1/precision/recall macro, top-k
    per_class: dict[str, Any]  # `hftransfer.metrics.classification_report`
    confusion_matrix: list[list[int]]
    num_samples: int
    split: str
    dataset: str
    output_dir: Path | None = None
    card_path: Path | None = None
    skipped: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        return {**data, "output_dir": str(self.output_dir) if self.output_dir else None,
                "card_path": str(self.card_path) if self.card_path else None}


def _data_config(data: str | Path | DataConfig, options: dict[str, Any]) -> DataConfig:
    unknown = sorted(set(options) - set(DATA_OPTIONS))
    if unknown:
        raise ConfigurationError(f"evaluate() got unknown data option(s) {unknown}; use any of {list(DATA_OPTIONS)}.")
    options = {k: v for k, v in options.items() if v is not None}
    if isinstance(data, DataConfig):
        return dataclasses.replace(data, **options)
    if not isinstance(data, (str, Path)) or not str(data):
        raise DataError(f"DATA={data!r} must be a folder, file, hub dataset id or a DataConfig.")
    return DataConfig(source=str(data), **options)


def evaluate(
    model: Any,
    data: str | Path | DataConfig,
    *,
    split: str | None = None,
    output_dir: str | Path | None = None,
    update_card: bool = False,
    batch_size: int = 32,
    revision: str | None = None,
    progress_bar: bool = True,
    compile: bool = False,
    backend: str = "auto",
    **data_options: Any,
) -> EvaluationResult:
    """Score `model` on labelled `data`: metrics, per-class report, confusion matrix and predictions.

    Run it plainly, or under `accelerate launch` (rows are sharded across processes, results gathered; only the main
    process writes). Labels of `data` are matched to the model's labels by name; one the model does not know is an
    error naming it.

    Args:
        model: a folder saved by hftransfer, a hub id, or an `AutoTransfer`.
        data: an image folder, CSV/TSV/JSON(L)/Parquet file, folder of split folders/files, `.npz`, hub dataset id,
            or a `DataConfig`.
        split: the hub split (default `"test"`) or split folder/file to use when `data` holds several.
        output_dir: where `metrics.json`, `predictions.csv`, `per_class.md` and `confusion_matrix.png` go (written
            atomically); None writes nothing.
        update_card: add the results to the model card's `model-index` (rest of the card kept): the model folder's
            README.md, or for a hub model `output_dir/README.md` (push it yourself).
        compile: `torch.compile` the model (in place, dynamic shapes) before scoring; where it cannot apply, the
            reason goes to stderr and scoring runs eagerly.
        backend: `"torch"`, `"onnx"` / `"onnx-int8"` (a folder written by `hftransfer export`, run by onnxruntime),
            or `"auto"`: onnx for an export folder, else torch.
        **data_options: `text_column`, `label_column`, `image_column`, `label_names`, `format`, `hub_subset`, ...
            as in `DataConfig`.
    """
    from hftransfer.training.accelerator import build_accelerator  # heavy: loads accelerate, timm

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigurationError(f"batch_size={batch_size!r} must be a positive integer.")
    card_source = _card_source(model, update_card, output_dir)
    config = _data_config(data, data_options)
    if not isinstance(model, AutoTransfer):
        model = load_model_for_inference(model, backend, revision, compile)
        if card_source is not None and not isinstance(model, AutoTransfer):
            raise ConfigurationError("--update-card needs the saved model folder (its README is the model card); "
                                     "an ONNX export has no card. Drop --update-card or evaluate the model folder.")
    names = [model.id2label[i] for i in range(model.num_labels)]
    acc = build_accelerator()
    with acc.main_process_first():
        labelled = load_labelled_split(config, names, split=split, key="DATA")
    if labelled.modality != model.modality:
        raise DataError(f"DATA={str(data)!r} is {labelled.modality} data but the model is a {model.modality} model.")
    if len(labelled) == 0:
        raise DataError(f"DATA={str(data)!r} has no usable labelled rows (all skipped).")
    logits, labels, order = _predict(acc, model, labelled.dataset, batch_size, progress_bar, compile)
    result = _score(logits, labels, names, labelled)
    if acc.is_main_process:
        if output_dir is not None:
            result.output_dir = Path(output_dir)
            _write_outputs(result, logits, labels, names, labelled, order)
        if card_source is not None:
            result.card_path = _update_card(card_source, model, result, labelled, output_dir, revision)
    acc.wait_for_everyone()
    return result


def _card_source(model: Any, update_card: bool, output_dir: str | Path | None) -> str | None:
    if not update_card:
        return None
    if not isinstance(model, (str, Path)):
        raise ConfigurationError("update_card=True needs the model as a folder or hub id (the card lives there); "
                                 "an in-memory AutoTransfer has no card.")
    if not Path(model).is_dir() and output_dir is None:
        raise ConfigurationError(f"update_card=True for hub model {str(model)!r} writes the updated card into "
                                 "output_dir; pass output_dir=... (CLI: --output-dir).")
    return str(model)


@torch.no_grad()
def _predict(acc: Any, model: Any, dataset: Any, batch_size: int, progress_bar: bool, compile: bool = False):
    """Logits and labels in dataset order, gathered over processes, and the row order the sampler produced."""
    from hftransfer.training.loaders import split_loader  # heavy: loads accelerate, timm

    n = acc.num_processes
    loader = split_loader(dataset, model, -(-batch_size // n) * n)
    # split_batches: each global batch is sliced across processes and gathered back whole, so the gathered rows come
    # in the sampler's order (length-sorted for text).
    order = np.array([key[1] if isinstance(key, tuple) else key for batch in loader.batch_sampler for key in batch])
    model.to(acc.device).eval()
    if compile:
        compile_for_inference(model, acc.device)
    logits_all, labels_all = [], []
    for batch in tqdm(acc.prepare_data_loader(loader), desc="evaluate", leave=False,
                      disable=not (progress_bar and acc.is_local_main_process)):
        labels = batch.pop("labels")
        logits = model(**{k: v.to(acc.device) for k, v in batch.items()}).logits.float()
        logits, labels = acc.gather_for_metrics((logits.contiguous(), labels.to(acc.device)))
        logits_all.append(logits.cpu())
        labels_all.append(labels.cpu())
    logits, labels = torch.cat(logits_all).numpy(), torch.cat(labels_all).numpy()
    restored_logits, restored_labels = np.empty_like(logits), np.empty_like(labels)
    restored_logits[order], restored_labels[order] = logits, labels
    return restored_logits, restored_labels, order


def _score(logits: np.ndarray, labels: np.ndarray, names: list[str], labelled: Any) -> EvaluationResult:
    preds = logits.argmax(-1)
    loss = float(F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels).long()))
    return EvaluationResult(
        metrics={"loss": loss, **compute_classification_metrics(logits, labels, names)},
        per_class=classification_report(preds, labels, names),
        confusion_matrix=confusion_matrix(preds, labels, len(names)),
        num_samples=len(labels),
        split=labelled.split,
        dataset=labelled.name,
        skipped=[dataclasses.asdict(s) for s in labelled.skipped],
    )


def _row_inputs(labelled: Any) -> list[str]:
    ds = labelled.dataset
    if labelled.modality == "text":
        texts = list(ds["text"])
        if "text_pair" in ds.column_names:
            return [f"{a} [SEP] {b}" for a, b in zip(texts, ds["text_pair"])]
        return texts
    raw = ds.cast_column("image", datasets.Image(decode=False))["image"]
    return [item.get("path") or f"row {i}" for i, item in enumerate(raw)]


def _write_outputs(result: EvaluationResult, logits: np.ndarray, labels: np.ndarray, names: list[str],
                   labelled: Any, order: np.ndarray) -> None:
    probs = torch.from_numpy(logits).softmax(-1).numpy()
    preds = probs.argmax(-1)
    inputs = _row_inputs(labelled)
    with atomic_directory(result.output_dir) as tmp:
        write_json(tmp / "metrics.json", {k: v for k, v in result.to_dict().items() if k not in ("output_dir",
                                                                                               "card_path")})
        with open(tmp / "predictions.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["row", "input", "label", "prediction", "score", "correct"])
            for i, (item, label, pred) in enumerate(zip(inputs, labels, preds)):
                writer.writerow([i, item, names[label], names[pred], f"{probs[i, pred]:.6f}", int(label == pred)])
        title = f"# Per-class report ({result.dataset} {result.split}, {result.num_samples} rows)"
        (tmp / "per_class.md").write_text(f"{title}\n\n{format_report_markdown(result.per_class)}\n", encoding="utf-8")
        try:
            plot_confusion_matrix(result.confusion_matrix, names, tmp / "confusion_matrix.png")
        except ImportError as err:  # matplotlib is the `report` extra

            logging.getLogger("hftransfer").warning("confusion matrix plot skipped: %s", err)


def _update_card(source: str, model: Any, result: EvaluationResult, labelled: Any,
                 output_dir: str | Path | None, revision: str | None) -> Path:
    folder = Path(source)
    if folder.is_dir():
        path = folder / "README.md"
        existing = path.read_text(encoding="utf-8") if path.is_file() else None
    else:
        path = Path(output_dir) / "README.md"
        try:
            existing = Path(fetch_file(source, "README.md", revision=revision)).read_text(encoding="utf-8")
        except (OSError, ValueError):
            existing = None
    kind = labelled.kind if labelled.kind in ("hub", "imagefolder", "csv", "json") else "arrays"
    name = labelled.name if kind != "hub" else str(labelled.path)
    dataset = DatasetInfo(name=name, kind=kind, path=labelled.path, label_names=list(model.label2id))
    card = add_eval_results(existing, dict(result.metrics), dataset, result.split, model.task,
                            model_name=folder.name if folder.is_dir() else source)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    card.save(tmp)
    os.replace(tmp, path)
    return path
