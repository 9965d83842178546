"""Using a trained model: `evaluate` it on labelled data, `predict_file` over folders, tables or stdin."""

from __future__ import annotations

from .evaluation import EvaluationResult, evaluate
from .predict import predict_file


__all__ = ["EvaluationResult", "evaluate", "predict_file"]
