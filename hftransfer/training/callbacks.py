"""Hooks into the training loop (progress reporting, custom stopping, fault injection in tests)."""

from __future__ import annotations

from typing import Any

from hftransfer.training.state import TrainState


class Callback:
    """Override any hook; each receives the trainer and the current loop state (``state.global_step``; the old
    ``state["global_step"]`` also works)."""

    def on_train_begin(self, trainer: Any) -> None: ...

    def on_step_end(self, trainer: Any, state: TrainState) -> None: ...

    def on_epoch_end(self, trainer: Any, state: TrainState, metrics: dict[str, float]) -> None: ...

    def on_train_end(self, trainer: Any, result: Any) -> None: ...
