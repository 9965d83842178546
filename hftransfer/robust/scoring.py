"""Score weight sets on one labelled split with `hftransfer.inference.evaluate`, loading the model once."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hftransfer.errors import ConfigurationError
from hftransfer.modeling import AutoTransfer


if TYPE_CHECKING:
    from hftransfer.modeling import AutoTransfer


class SplitScorer:
    """Accuracy (and the other `evaluate` metrics) of weight sets of one architecture on ``data``/``split``.

    ``model`` (a folder, loaded once, or a model) receives each state in turn and is scored by `evaluate`.
    """

    def __init__(self, model: Path | AutoTransfer, data: str | Path, split: str | None, batch_size: int = 32,
                 progress_bar: bool = False, **data_options: Any):
        if split is None and not Path(str(data)).exists():
            raise ConfigurationError(
                f"data={str(data)!r} is not a local path: name the split to choose on with split=... (CLI: --split), "
                "e.g. 'validation'. The test split (or target labels) is never used by default.")
        self.data, self.split, self.batch_size = data, split, batch_size
        self.progress_bar, self.data_options = progress_bar, data_options
        self.model = model if isinstance(model, AutoTransfer) else AutoTransfer.from_pretrained(model)
        self.dataset: str | None = None
        self.used_split: str | None = None
        self.num_samples = 0

    def __call__(self, state: dict[str, torch.Tensor]) -> dict[str, float]:
        from hftransfer.inference.evaluation import evaluate  # heavy: loads datasets

        _, unexpected = self.model.load_state_dict(state, strict=False)
        if unexpected:
            raise ConfigurationError(f"weights do not fit the model they are scored with: unexpected "
                                     f"{unexpected[:5]}.")
        result = evaluate(self.model, self.data, split=self.split, batch_size=self.batch_size,
                          progress_bar=self.progress_bar, **self.data_options)
        if self.split is None and result.split == "test":
            raise ConfigurationError(
                f"data={str(self.data)!r} holds only a 'test' split; choosing weights on it would leak the test set. "
                "Pass a validation split (split=... / --split), or split='test' if you really mean it.")
        self.dataset, self.used_split, self.num_samples = result.dataset, result.split, result.num_samples
        return {k: float(v) for k, v in result.metrics.items()}

    def selection(self) -> dict[str, Any]:
        """What the scores were computed on (for the JSON records)."""
        return {"data": str(self.data), "dataset": self.dataset, "split": self.used_split,
                "num_samples": self.num_samples, "metric": "accuracy"}
