# Copyright 2025 The hftransfer Authors. Licensed under the Apache License, Version 2.0.
"""PNG figures for reports and model cards. matplotlib is optional: `pip install hftransfer[report]`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


# Trainer-style throughput/timing logs are not quality metrics; plotting them next to accuracy only adds noise.
_SKIPPED_SUFFIXES = ("_runtime", "_per_second")
_MAX_ANNOTATED_CLASSES = 30
_MAX_TICK_LABELS = 60


def new_figure(figsize: tuple[float, float]) -> Any:
    """A matplotlib ``Figure`` on its own Agg canvas (ImportError naming the extra when matplotlib is absent)."""
    # The object-oriented API with an explicit Agg canvas leaves pyplot's global backend and state alone.
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # optional dependency
        from matplotlib.figure import Figure  # optional dependency
    except ImportError as error:
        raise ImportError(
            "Plotting needs matplotlib, which is an optional dependency. Install it with "
            "`pip install hftransfer[report]` (or `pip install matplotlib`)."
        ) from error
    figure = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Any, path: str | Path) -> Path:
    """Write ``figure`` as a PNG to ``path`` (parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=100)
    return path


def plot_confusion_matrix(
    cm: Sequence[Sequence[int]], label_names: Sequence[str], path: str | Path, normalize: bool = False
) -> Path:
    """Save a confusion matrix heatmap (rows = true class, columns = predicted class) as a PNG.

    Args:
        cm (`list[list[int]]`): Square count matrix, e.g. from [`confusion_matrix`].
        label_names (`list[str]`): Class names in class-id order.
        path (`str` or `Path`): Output `.png` file; parent folders are created.
        normalize (`bool`, *optional*, defaults to `False`): Color and annotate by row (recall per class).

    Returns:
        `Path`: The written file.
    """
    matrix = np.asarray(cm, dtype=np.float64)
    n = len(label_names)
    if matrix.shape != (n, n):
        raise ValueError(
            f"`cm` must be a square matrix with one row per label name ({n}x{n}), got shape {matrix.shape}."
        )
    if normalize:
        matrix = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    side = min(max(4.0, 0.45 * n + 2.0), 30.0)
    figure = new_figure((side + 1.0, side))
    ax = figure.add_subplot()
    image = ax.imshow(matrix, cmap="Blues", interpolation="nearest")
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xlabel("Predicted label")
    ax.set_ylabel("True label")
    ax.set_title("Confusion matrix" + (" (row-normalized)" if normalize else ""))
    if n <= _MAX_TICK_LABELS:
        ax.set_xticks(range(n), labels=list(label_names), rotation=45, ha="right", rotation_mode="anchor")
        ax.set_yticks(range(n), labels=list(label_names))
    if n <= _MAX_ANNOTATED_CLASSES:
        threshold = matrix.max() / 2 if matrix.size else 0
        for i in range(n):
            for j in range(n):
                text = f"{matrix[i, j]:.2f}" if normalize else f"{int(matrix[i, j])}"
                color = "white" if matrix[i, j] > threshold else "black"
                ax.text(j, i, text, ha="center", va="center", color=color, fontsize=8)
    return save_figure(figure, path)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def plot_training_curves(history: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Save losses (left) and every `eval_*` metric (right) against epoch as a PNG.

    Args:
        history (`list[dict]`): One row per evaluation, e.g.
            `{"epoch": 1, "train_loss": 0.9, "eval_loss": 0.8, "eval_accuracy": 0.7}`. Keys ending in `loss` go
            to the loss panel; missing or non-finite values are skipped. Rows without `epoch` use their index + 1.
        path (`str` or `Path`): Output `.png` file; parent folders are created.

    Returns:
        `Path`: The written file.
    """
    if not history:
        raise ValueError("`history` is empty: log at least one row like {'epoch': 1, 'train_loss': ...}.")
    keys = list(dict.fromkeys(key for row in history for key in row))
    loss_keys = [key for key in keys if key.endswith("loss")]
    metric_keys = [
        key
        for key in keys
        if key.startswith("eval_") and key not in loss_keys and not key.endswith(_SKIPPED_SUFFIXES)
    ]
    if not loss_keys and not metric_keys:
        raise ValueError(
            f"`history` has no loss or eval_* keys to plot (got keys {keys}). Log e.g. 'train_loss' or "
            "'eval_accuracy'."
        )
    panels = [(keys_, title) for keys_, title in ((loss_keys, "Loss"), (metric_keys, "Eval metrics")) if keys_]
    figure = new_figure((6.0 * len(panels), 4.5))
    from matplotlib.ticker import MaxNLocator  # optional dependency
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (panel_keys, title) in zip(axes, panels):
        for key in panel_keys:
            points = [
                (row.get("epoch", index + 1), row[key])
                for index, row in enumerate(history)
                if _is_number(row.get(key)) and _is_number(row.get("epoch", index + 1))
            ]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o", markersize=3, label=key)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        if all(isinstance(row.get("epoch", 1), int) for row in history):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(figure, path)
