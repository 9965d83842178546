# Copyright 2025 The hftransfer Authors. Licensed under the Apache License, Version 2.0.
"""Classification metrics computed through hftransfer's packaged, offline `evaluate` modules."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np


if TYPE_CHECKING:
    import evaluate


_MODULES_DIR = Path(__file__).parent / "modules"

# name -> folder holding `<name>.py` (an `evaluate.Metric` subclass). Filled by `register_metric` below.
METRIC_REGISTRY: dict[str, Path] = {}


def register_metric(name: str, module_dir: str | Path, exist_ok: bool = False) -> None:
    """Make a local `evaluate` module folder loadable by name with [`load_metric`].

    Args:
        name (`str`): Registry name, e.g. `"accuracy"`.
        module_dir (`str` or `Path`): Folder containing `<folder name>.py` with one `evaluate.Metric` subclass.
        exist_ok (`bool`, *optional*, defaults to `False`): Allow replacing an already registered name.
    """
    module_dir = Path(module_dir)
    script = module_dir / f"{module_dir.name}.py"
    if not script.is_file():
        raise FileNotFoundError(
            f"`module_dir` must contain a metric script named after the folder, but {script} does not exist. "
            f"Put the `evaluate.Metric` subclass in {module_dir.name}.py."
        )
    if name in METRIC_REGISTRY and not exist_ok:
        raise ValueError(f"Metric '{name}' is already registered ({METRIC_REGISTRY[name]}). Pass exist_ok=True.")
    METRIC_REGISTRY[name] = module_dir


for _name in ("accuracy", "f1", "precision", "recall", "top_k_accuracy"):
    register_metric(_name, _MODULES_DIR / _name)


def available_metrics() -> list[str]:
    """Names accepted by [`load_metric`]."""
    return sorted(METRIC_REGISTRY)


def load_metric(name: str, **kwargs: Any) -> evaluate.EvaluationModule:
    """Load a packaged metric as an `evaluate.EvaluationModule`, without network access.

    Args:
        name (`str`): One of [`available_metrics`], e.g. `"accuracy"`, `"f1"`, `"top_k_accuracy"`.
        kwargs: Passed to `evaluate.load` (`keep_in_memory`, `cache_dir`, `num_process`, `process_id`, ...).

    Example:

    ```py
    >>> from hftransfer.metrics import load_metric
    >>> load_metric("accuracy").compute(predictions=[0, 1, 1], references=[0, 1, 0])
    {'accuracy': 0.6666666666666666}
    ```
    """
    if name not in METRIC_REGISTRY:
        raise ValueError(f"Unknown metric name {name!r}. Available metrics: {', '.join(available_metrics())}.")
    import evaluate  # heavy: pulls in datasets, which would slow `import hftransfer`

    return evaluate.load(str(METRIC_REGISTRY[name]), **kwargs)


def _check_scores_and_references(scores: np.ndarray, references: np.ndarray, num_labels: int) -> None:
    if scores.ndim != 2:
        raise ValueError(
            f"`logits_or_probs` must have shape (num_samples, num_classes), got shape {scores.shape}. "
            "Pass the raw model outputs, not argmax predictions."
        )
    if scores.shape[1] != num_labels:
        raise ValueError(
            f"`logits_or_probs` has {scores.shape[1]} columns but `label_names` has {num_labels} names. "
            "Pass one label name per class, in class-id order."
        )
    if references.shape != (scores.shape[0],):
        raise ValueError(
            f"`references` must have shape ({scores.shape[0]},) to match `logits_or_probs`, got {references.shape}."
        )
    _check_class_ids("references", references, num_labels)


def _check_class_ids(arg: str, values: np.ndarray, num_labels: int) -> None:
    if values.size and (not np.issubdtype(values.dtype, np.integer) or values.min() < 0 or values.max() >= num_labels):
        raise ValueError(
            f"`{arg}` must hold integer class ids in [0, {num_labels - 1}], got values from {values.min()} to "
            f"{values.max()} (dtype {values.dtype}). Map labels to ids with the dataset's label2id first."
        )


DEFAULT_TOP_K = (5,)


def classification_metric_names(num_labels: int | None = None, top_k: tuple[int, ...] = DEFAULT_TOP_K) -> list[str]:
    """Names of the metrics [`compute_classification_metrics`] returns (for `num_labels` classes; None: any count).

    `top{k}_accuracy` is only computed when `k < num_labels`.
    """
    names = ["accuracy", "f1_macro", "precision_macro", "recall_macro"]
    return names + [f"top{k}_accuracy" for k in sorted(set(top_k)) if num_labels is None or k < num_labels]


def compute_classification_metrics(
    logits_or_probs: np.ndarray,
    references: np.ndarray,
    label_names: Sequence[str],
    top_k: tuple[int, ...] = DEFAULT_TOP_K,
) -> dict[str, float]:
    """Accuracy, macro precision/recall/F1 and top-k accuracy, computed with the packaged `evaluate` modules.

    Macro averages run over the classes present in `references` or in the predictions (scikit-learn's and the Hub
    `evaluate` metrics' default), so a split that lacks a class is not penalised for it; use
    [`classification_report`] for every class. `top{k}_accuracy` is skipped when `k >= num_classes` (always 1).

    Args:
        logits_or_probs (`np.ndarray` of shape `(N, C)`): Model scores; only their order matters.
        references (`np.ndarray` of shape `(N,)`): True class ids in `[0, C)`.
        label_names (`list[str]`): The `C` class names, in class-id order.
        top_k (`tuple[int, ...]`, *optional*, defaults to `(5,)`): The `k` values of the top-k accuracies.

    Returns:
        `dict[str, float]`: `accuracy`, `f1_macro`, `precision_macro`, `recall_macro` and `top{k}_accuracy`.
    """
    scores = np.asarray(logits_or_probs)
    refs = np.asarray(references)
    _check_scores_and_references(scores, refs, len(label_names))
    if any(not isinstance(k, (int, np.integer)) or k < 1 for k in top_k):
        raise ValueError(f"`top_k` must hold positive integers, got {top_k!r}.")
    preds = scores.argmax(axis=1)

    # keep_in_memory: metrics run on already gathered arrays, so evaluate needs no cache files or locks on disk.
    results = {"accuracy": load_metric("accuracy", keep_in_memory=True).compute(predictions=preds, references=refs)}
    for name in ("f1", "precision", "recall"):
        metric = load_metric(name, keep_in_memory=True)
        results[f"{name}_macro"] = metric.compute(predictions=preds, references=refs, average="macro")
    top_k_metric = load_metric("top_k_accuracy", keep_in_memory=True) if top_k else None
    for k in sorted(set(top_k)):
        if k < scores.shape[1]:
            results[f"top{k}_accuracy"] = top_k_metric.compute(
                predictions=scores, references=refs, k=int(k), labels=list(range(scores.shape[1]))
            )
    return {key: float(next(iter(value.values()))) for key, value in results.items()}


def _check_preds_refs(preds: Sequence[int] | np.ndarray, refs: Sequence[int] | np.ndarray, num_labels: int):
    preds, refs = np.asarray(preds), np.asarray(refs)
    if preds.shape != refs.shape or preds.ndim != 1:
        raise ValueError(
            f"`preds` and `refs` must be 1-D and of equal length, got shapes {preds.shape} and {refs.shape}. "
            "Pass class ids, e.g. logits.argmax(-1)."
        )
    _check_class_ids("preds", preds, num_labels)
    _check_class_ids("refs", refs, num_labels)
    return preds, refs


def classification_report(
    preds: Sequence[int] | np.ndarray, refs: Sequence[int] | np.ndarray, label_names: Sequence[str]
) -> dict[str, Any]:
    """Per-class precision, recall, F1 and support, plus macro and weighted averages over all classes.

    A class with no predictions or no references scores 0 rather than warning (`zero_division=0`).

    Returns:
        `dict`: `{"classes": {name: {"precision", "recall", "f1", "support"}}, "macro_avg": {...},
        "weighted_avg": {...}, "accuracy": float, "num_samples": int}`.
    """
    from sklearn.metrics import precision_recall_fscore_support  # heavy: loaded only when used

    if len(set(label_names)) != len(label_names):
        raise ValueError(f"`label_names` must be unique, got {list(label_names)}.")
    preds, refs = _check_preds_refs(preds, refs, len(label_names))
    labels = list(range(len(label_names)))

    def row(average: str | None) -> tuple:
        return precision_recall_fscore_support(refs, preds, labels=labels, average=average, zero_division=0)

    precision, recall, f1, support = row(None)
    classes = {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(label_names, precision, recall, f1, support)
    }
    report: dict[str, Any] = {"classes": classes}
    for average in ("macro", "weighted"):
        p, r, f, _ = row(average)
        report[f"{average}_avg"] = {"precision": float(p), "recall": float(r), "f1": float(f), "support": len(refs)}
    report["accuracy"] = float((preds == refs).mean()) if len(refs) else 0.0
    report["num_samples"] = len(refs)
    return report


def confusion_matrix(
    preds: Sequence[int] | np.ndarray, refs: Sequence[int] | np.ndarray, num_labels: int
) -> list[list[int]]:
    """`num_labels x num_labels` counts: row = true class, column = predicted class."""
    from sklearn.metrics import confusion_matrix as sk_confusion_matrix  # heavy: loaded only when used

    preds, refs = _check_preds_refs(preds, refs, num_labels)
    matrix = sk_confusion_matrix(refs, preds, labels=list(range(num_labels)))
    return [[int(count) for count in row] for row in matrix]


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def format_report_markdown(report: dict[str, Any], digits: int = 4) -> str:
    """Render a [`classification_report`] dict as a Markdown table (one row per class, then the averages)."""
    if "classes" not in report:
        raise ValueError(
            f"`report` must be the dict returned by classification_report (with a 'classes' key), got keys "
            f"{sorted(report)}."
        )
    lines = ["| Class | Precision | Recall | F1 | Support |", "|:--|--:|--:|--:|--:|"]

    def add(name: str, row: dict[str, Any]) -> None:
        values = (f"{row[key]:.{digits}f}" for key in ("precision", "recall", "f1"))
        lines.append(f"| {name} | {' | '.join(values)} | {row['support']} |")

    for name, row in report["classes"].items():
        add(_cell(name), row)
    for key, title in (("macro_avg", "**macro avg**"), ("weighted_avg", "**weighted avg**")):
        if key in report:
            add(title, report[key])
    if "accuracy" in report:
        lines.append(f"| **accuracy** | | | {report['accuracy']:.{digits}f} | {report.get('num_samples', '')} |")
    return "\n".join(lines)
