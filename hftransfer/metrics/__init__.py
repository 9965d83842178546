# Copyright 2025 The hftransfer Authors. Licensed under the Apache License, Version 2.0.
"""Offline classification metrics (packaged `evaluate` modules), reports and plots."""

from .classification import (
    METRIC_REGISTRY,
    available_metrics,
    classification_metric_names,
    classification_report,
    compute_classification_metrics,
    confusion_matrix,
    format_report_markdown,
    load_metric,
    register_metric,
)
from .plots import plot_confusion_matrix, plot_training_curves


__all__ = [
    "METRIC_REGISTRY",
    "available_metrics",
    "classification_metric_names",
    "classification_report",
    "compute_classification_metrics",
    "confusion_matrix",
    "format_report_markdown",
    "load_metric",
    "plot_confusion_matrix",
    "plot_training_curves",
    "register_metric",
]
