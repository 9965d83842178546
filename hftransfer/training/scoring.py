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
from hftransfer.training.loaders import split_loader
from hftransfer.training.sharding import average_batchnorm_statistics


if TYPE_CHECKING:
    from collections.abc import Callable

    import datasets
    from accelerate import Accelerator

    from hftransfer.training.config import TrainConfig


@torch.no_grad()
def predict(accelerator: Accelerator, model: torch.nn.Module, loader: Any,
            progress_bar: bool = False) -> tuple[np.ndarray, np.ndarray, float]:
    """Logits and labels of a prepared loader, gathered across processes, and the mean loss (NaN for unlabelled
    data). Leaves ``model`` in eval mode. Under FSDP / DeepSpeed the processes' BatchNorm statistics are averaged
    first, so every process scores (and later saves) one model."""
    acc = accelerator
    average_batchnorm_statistics(acc, model)
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


def score_test_split(accelerator: Accelerator, model: torch.nn.Module, test: datasets.Dataset,
                     label_names: Sequence[str], config: TrainConfig, log: Callable[[str], None]) -> dict[str, Any]:
    """Score the best model (in memory, prepared) once on the held-out test split; never used for model selection.
    Logged, and sent to the trackers with ``report_to``."""
    loader = accelerator.prepare_data_loader(split_loader(
        test, accelerator.unwrap_model(model), config.eval_batch_size or config.batch_size, seed=config.seed,
        num_workers=config.num_workers))
    logits, labels, loss = predict(accelerator, model, loader, config.progress_bar)
    test_metrics = score(logits, labels, loss, label_names, per_class=True, confusion=True)
    scalars = {k: v for k, v in test_metrics.items() if isinstance(v, float)}
    log("test (best epoch, held out): " + " | ".join(f"{k} {v:.4g}" for k, v in scalars.items()))
    if config.report_to:
        accelerator.log({f"test/{k}": v for k, v in scalars.items()})
    return test_metrics
