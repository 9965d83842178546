"""The training loop's state: what callbacks see and what a resume checkpoint stores (``trainer_state.json``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainState:
    """Position and running numbers of a run. Callbacks may also read it like the dict it once was
    (``state["global_step"]``); checkpoints store :meth:`to_dict`, the same keys as before, so old checkpoints
    resume."""

    epoch: int = 0  # epochs finished
    batches_done: int = 0  # batches of the current epoch already trained (a resumed epoch skips them)
    global_step: int = 0  # optimizer steps
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per finished epoch
    best_metric: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0  # epochs since the selection metric last improved (early stopping)
    loss_sum: float = 0.0  # this epoch, this process
    loss_count: int = 0
    samples: int = 0  # this epoch, all processes
    train_time: float = 0.0  # this epoch's training seconds (compile time excluded)
    target_stream: dict[str, int] | None = None  # the domain-adaptation target stream's position, once checkpointed

    def __getitem__(self, key: str) -> Any:
        if key not in _FIELDS:
            raise KeyError(key)
        return getattr(self, key)

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in _FIELDS:
            raise KeyError(f"{key!r} is not a TrainState field; fields: {sorted(_FIELDS)}")
        setattr(self, key, value)

    def __contains__(self, key: object) -> bool:
        return key in _FIELDS and (key != "target_stream" or self.target_stream is not None)

    def start_epoch(self) -> None:
        """Zero the per-epoch counters (not on a resumed epoch, whose counters come from the checkpoint)."""
        self.loss_sum, self.loss_count, self.samples, self.train_time = 0.0, 0, 0, 0.0

    def record_selection(self, value: float, epoch: int, greater_is_better: bool) -> bool:
        """Note an epoch's model-selection value; True when it is the best so far (the model to keep)."""
        best = self.best_metric
        if best is None or (value > best if greater_is_better else value < best):
            self.best_metric, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint form: every field in declaration order; ``target_stream`` only once it is set."""
        out = {name: getattr(self, name) for name in _FIELDS}
        if self.target_stream is None:
            del out["target_stream"]
        return out

    def load(self, saved: dict[str, Any]) -> None:
        """Take over the fields of a checkpoint's ``trainer_state.json`` (without its ``rng``)."""
        unknown = sorted(set(saved) - set(_FIELDS))
        if unknown:
            raise KeyError(f"checkpoint state has unknown key(s) {unknown}; known: {sorted(_FIELDS)}")
        for key, value in saved.items():
            setattr(self, key, value)


_FIELDS = tuple(f.name for f in dataclasses.fields(TrainState))
