"""A run's writes to and reads from its output folder during training: resume checkpoints (with the objective's
tensors and the target stream's position) and the best model (gathered first when sharded)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from hftransfer.saved_format import FULL_WEIGHTS, TRAINED_WEIGHTS
from hftransfer.training import checkpoint as ckpt
from hftransfer.training.sharding import gathered_state_dict, load_full_state_dict, sharding_kind, shards_parameters
from hftransfer.utils.io import load_state_dict


if TYPE_CHECKING:
    from accelerate import Accelerator

    from hftransfer.objectives import Objective
    from hftransfer.training.domain import DomainRun
    from hftransfer.training.state import TrainState


class RunCheckpoints:
    """Checkpoints of one run in ``output_dir``: the main process writes, every process waits for it."""

    def __init__(self, accelerator: Accelerator, output_dir: Path, keep: int, log: Callable[[str], None]):
        self.accelerator, self.output_dir, self.keep, self._log = accelerator, Path(output_dir), keep, log
        self._said_sharded = False

    def _sharded(self) -> bool:
        """Resume checkpoints hold one process's full state; with sharded state (FSDP, ZeRO) none are written."""
        kind = sharding_kind(self.accelerator)
        if kind is None:
            return False
        if not self._said_sharded:
            self._log(f"resume checkpoints are not written under {kind}: the model/optimizer state is sharded "
                      "(the best model is still saved, gathered, in output_dir/model)")
            self._said_sharded = True
        return True

    def save(self, model: nn.Module, optimizer: Any, scheduler: Any, state: TrainState, objective: Objective,
             domain: DomainRun) -> None:
        """``checkpoints/step_<global_step>``: model, optimizer, scheduler, RNG, ``state``, the objective's tensors."""
        acc = self.accelerator
        if self._sharded():
            return
        acc.wait_for_everyone()
        if acc.is_main_process:
            if domain.stream is not None:
                state.target_stream = domain.state_dict()
            ckpt.save_checkpoint(self.output_dir, acc.unwrap_model(model), optimizer.optimizer, scheduler.scheduler,
                                 state.to_dict(), self.keep, objective_state=objective.state_dict())
        acc.wait_for_everyone()

    def resume(self, model: nn.Module, optimizer: Any, scheduler: Any, state: TrainState, objective: Objective,
               domain: DomainRun) -> bool:
        """Restore the newest checkpoint, if any, into the model, optimizer, scheduler, ``state``, the objective and
        the target stream; False when there is none."""
        found = ckpt.list_checkpoints(self.output_dir)
        if not found:
            return False
        acc = self.accelerator
        state.load(ckpt.load_checkpoint(found[-1], acc.unwrap_model(model), optimizer.optimizer, scheduler.scheduler))
        objective_state = ckpt.load_objective_state(found[-1])
        if objective_state:
            objective.load_state_dict({k: v.to(acc.device) for k, v in objective_state.items()})
        domain.load_state_dict(state.target_stream)
        self._log(f"resumed from {found[-1]} (epoch {state.epoch}, step {state.global_step}, "
                  f"{state.batches_done} batches into the epoch)")
        return True

    def save_model(self, model: nn.Module, path: Path) -> None:
        """The model as a saved-model folder. Sharded weights (FSDP, ZeRO-3) are gathered first, so LoRA & co.
        still save only their trained parameters."""
        acc = self.accelerator
        acc.wait_for_everyone()
        acc.unwrap_model(model).save_pretrained(path, is_main_process=acc.is_main_process,
                                                state_dict=gathered_state_dict(acc, model))
        acc.wait_for_everyone()

    def load_model(self, model: nn.Module, model_dir: Path) -> None:
        """Load a folder written by :meth:`save_model` back into ``model`` (the best model, at the end of a run)."""
        unwrapped = self.accelerator.unwrap_model(model)
        for name in (FULL_WEIGHTS, TRAINED_WEIGHTS):
            if (model_dir / name).is_file():
                weights = load_state_dict(model_dir / name)
                if shards_parameters(self.accelerator):
                    load_full_state_dict(self.accelerator, model, weights, strict=name == FULL_WEIGHTS)
                else:
                    unwrapped.load_state_dict(weights, strict=name == FULL_WEIGHTS)
                return
