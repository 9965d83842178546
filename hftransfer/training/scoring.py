"""A model's predictions on a loader, and logits and labels -> the metrics dict every report of a run uses (history
rows, final, test, target)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from hftransfer.metrics import classification_report, compute_classification_metrics, confusion_matrix


if TYPE_CHECKING:
    from accelerate import Accelerator


@torch.no_grad()
def predict(accelerator: Accelerator, model: torch.nn.Module, loader: Any,
            progress_bar: bool = False) -> tuple[np.ndarray, np.ndarray, float]:
    """Logits and labels of a prepared loader, gathered across processes, and the mean loss (NaN for unlabelled
    data). Leaves ``model`` in eval mode."""
    acc = accelerator
    model.eval()
    logits_all, labels_all = [], []
    for batch in tqdm(loader, desc="eval", leave=False, disable=not (progress_bar and acc.is_local_main_process)):
        labels = batch.pop("labels")
        logits = model(**batch).logits.float()
        logits, labels = acc.gather_for_metrics((logits.contiguous(), labels))
        logits_all.append(logits.cpu())
        labels_all.append(labels.cpu())
    logits, labels = torch.cat(logits_all), torch.cat(labels_all)
    loss = float(F.cross_entropy(logits, labels)) if bool((labels >= 0).all()) else float("nan")
    return logits.numpy(), labels.numpy(), loss


def score(logits: np.ndarray, labels: np.ndarray, loss: float, label_names: Sequence[str], *,
          per_class: bool = False, confusion: bool = False) -> dict[str, Any]:
    """``{"loss", <classification metrics>}``, plus the per-class report and the confusion matrix when asked."""
    out: dict[str, Any] = {"loss": loss, **compute_classification_metrics(logits, labels, label_names)}
    if per_class or confusion:
        preds = logits.argmax(-1)
        if per_class:
            out["per_class"] = classification_report(preds, labels, label_names)
        if confusion:
            out["confusion_matrix"] = confusion_matrix(preds, labels, len(label_names))
    return out
