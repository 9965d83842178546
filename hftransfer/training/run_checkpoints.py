"""A run's writes to and reads from its output folder during training: resume checkpoints (with the objective's
tensors and the target stream's position) and the best model (gathered first when sharded).

Two kinds of resume checkpoint, both in ``checkpoints/step_<global_step>`` (``checkpoint.checkpoint_path``), both
written to a temp folder that the main process renames, and both listed by ``checkpoint.list_checkpoints``:

- one process's full state (no sharding: one process, or DDP): ``checkpoint.save_checkpoint``, main process only.
- sharded state (FSDP, DeepSpeed ZeRO): ``Accelerator.save_state``, a collective: every process writes its part.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from accelerate.utils import broadcast_object_list, gather_object
from torch import nn

from hftransfer.errors import ConfigurationError
from hftransfer.saved_format import FULL_WEIGHTS, TRAINED_WEIGHTS
from hftransfer.training import checkpoint as ckpt
from hftransfer.training.sharding import (
    average_batchnorm_statistics,
    full_tensors,
    gathered_state_dict,
    load_full_state_dict,
    shaped_like,
    sharding_kind,
    shards_parameters,
)
from hftransfer.utils.io import atomic_directory, load_state_dict, read_json, write_json


if TYPE_CHECKING:
    from accelerate import Accelerator

    from hftransfer.objectives import Objective
    from hftransfer.training.domain import DomainRun
    from hftransfer.training.state import TrainState


class RunCheckpoints:
    """Checkpoints of one run in ``output_dir``: the main process writes (with sharded state every process writes
    its part into the main process's temp folder), every process waits for it."""

    def __init__(self, accelerator: Accelerator, output_dir: Path, keep: int, log: Callable[[str], None]):
        self.accelerator, self.output_dir, self.keep, self._log = accelerator, Path(output_dir), keep, log

    def _sharding(self) -> dict[str, Any] | None:
        """What a sharded checkpoint of this run records in ``checkpoint.SHARDING``; ``None`` when state is not
        sharded (one process, or DDP: every process holds the full state)."""
        kind = sharding_kind(self.accelerator)
        return None if kind is None else {"kind": kind, "num_processes": self.accelerator.num_processes}

    def save(self, model: nn.Module, optimizer: Any, scheduler: Any, state: TrainState, objective: Objective,
             domain: DomainRun) -> None:
        """``checkpoints/step_<global_step>``: model, optimizer, scheduler, RNG, ``state``, the objective's tensors."""
        acc = self.accelerator
        acc.wait_for_everyone()
        if acc.is_main_process and domain.stream is not None:
            state.target_stream = domain.state_dict()  # the main process writes trainer_state.json
        if self._sharding() is not None:
            # the checkpoint holds one model: the processes' BatchNorm statistics are made one first, so a resumed run
            # starts where the uninterrupted one goes on
            average_batchnorm_statistics(acc, model)
            self._save_sharded(state, objective)
            acc.wait_for_everyone()
            return
        # Several processes: each one's running loss of the epoch (TrainState holds the main process's).
        losses = gather_object([[state.loss_sum, state.loss_count]]) if acc.num_processes > 1 else None
        if acc.is_main_process:
            ckpt.save_checkpoint(self.output_dir, acc.unwrap_model(model), optimizer.optimizer, scheduler.scheduler,
                                 state.to_dict(), self.keep, objective_state=objective.state_dict(),
                                 process_losses=losses)
        acc.wait_for_everyone()

    def _save_sharded(self, state: TrainState, objective: Objective) -> None:
        """A collective: ``Accelerator.save_state`` into the main process's temp folder, which it renames once every
        process has written. Files (all local to this run, read back only by :meth:`_resume_sharded`, never from the
        hub):

        - accelerate's (``save_state``): the model(s) and optimizer in accelerate's format for the kind (FSDP full
          state dict: ``pytorch_model_fsdp*.bin``/``optimizer*.bin``, torch pickles written by rank 0; DeepSpeed:
          ``pytorch_model*/`` with every rank's ZeRO partitions), ``scheduler.bin`` (pickle), and
          ``random_states_<rank>.pkl`` (each process's Python/NumPy/torch RNG, a pickle written by that process);
        - ours (main process): ``trainer_state.json`` (the TrainState, with the target stream's position),
          ``objective.safetensors`` (objective tensors accelerate does not hold), ``process_losses.json`` (every
          process's running loss of the epoch) and ``sharding.json`` (kind and number of processes, checked on
          resume).
        """
        acc = self.accelerator
        # no trainable modules here (preflight refuses such objectives under sharding): an EMA teacher, statistics
        extra = full_tensors(objective.state_dict())  # a collective for FSDP shards
        losses = gather_object([[state.loss_sum, state.loss_count]])  # per process (TrainState: rank 0's)
        with ExitStack() as stack:
            tmp = None
            if acc.is_main_process:
                tmp = str(stack.enter_context(atomic_directory(ckpt.checkpoint_path(self.output_dir,
                                                                                    state.global_step))))
            tmp = Path(broadcast_object_list([tmp])[0])
            acc.save_state(str(tmp))
            if acc.is_main_process:
                ckpt.write_objective_state(tmp, extra)
                write_json(tmp / ckpt.SHARDING, self._sharding())
                write_json(tmp / ckpt.PROCESS_LOSSES, losses)
                write_json(tmp / ckpt.TRAINER_STATE, state.to_dict())  # last: marks the folder complete
            acc.wait_for_everyone()  # every process's files are in tmp before the main process renames it
        if acc.is_main_process:
            ckpt.remove_old_checkpoints(self.output_dir, self.keep)

    def resume(self, model: nn.Module, optimizer: Any, scheduler: Any, state: TrainState, objective: Objective,
               domain: DomainRun) -> bool:
        """Restore the newest checkpoint, if any, into the model, optimizer, scheduler, ``state``, the objective and
        the target stream; False when there is none."""
        found = ckpt.list_checkpoints(self.output_dir)
        if not found:
            return False
        acc = self.accelerator
        self._check_resumable(found[-1])
        if self._sharding() is not None:
            state.load(self._resume_sharded(found[-1], objective))
            state.loss_sum, state.loss_count = read_json(found[-1] / ckpt.PROCESS_LOSSES)[acc.process_index]
        else:
            state.load(ckpt.load_checkpoint(found[-1], acc.unwrap_model(model), optimizer.optimizer,
                                            scheduler.scheduler))
            objective_state = ckpt.load_objective_state(found[-1])
            if objective_state:
                objective.load_state_dict({k: v.to(acc.device) for k, v in objective_state.items()})
            if (found[-1] / ckpt.PROCESS_LOSSES).is_file():
                state.loss_sum, state.loss_count = read_json(found[-1] / ckpt.PROCESS_LOSSES)[acc.process_index]
        domain.load_state_dict(state.target_stream)
        self._log(f"resumed from {found[-1]} (epoch {state.epoch}, step {state.global_step}, "
                  f"{state.batches_done} batches into the epoch)")
        return True

    def _resume_sharded(self, path: Path, objective: Objective) -> dict[str, Any]:
        """A collective: ``Accelerator.load_state`` (models, optimizer, scheduler, each process's RNG), then the
        objective's tensors; returns the saved TrainState."""
        self.accelerator.load_state(str(path))
        extra = ckpt.load_objective_state(path)
        if extra:
            current = objective.state_dict()
            objective.load_state_dict({**current, **{k: shaped_like(v, current[k]) for k, v in extra.items()}})
        return read_json(path / ckpt.TRAINER_STATE)

    def _check_resumable(self, path: Path) -> None:
        """Sharded state resumes only under the sharding and number of processes that wrote it, and a full-state
        checkpoint not under sharding: raise a ConfigurationError naming what differs before anything is loaded."""
        saved, here = ckpt.checkpoint_sharding(path), self._sharding()
        if saved == here:
            return
        n = self.accelerator.num_processes
        start_over = "or start over in another output_dir (or with overwrite_output_dir=true / resume=false)"
        if here is None:
            raise ConfigurationError(
                f"resume: checkpoint {str(path)!r} holds {saved['kind']} state sharded over "
                f"{saved['num_processes']} processes, but this run ({n} process(es)) shards nothing. Resume it with "
                f"the launch that wrote it (accelerate launch --config_file <the {saved['kind']} preset> "
                f"--num_processes {saved['num_processes']}), {start_over}.")
        if saved is None:
            raise ConfigurationError(
                f"resume: checkpoint {str(path)!r} holds one process's full state (written without FSDP/DeepSpeed "
                f"ZeRO), but this run shards state ({here['kind']} over {n} processes). Resume it with the launch "
                f"that wrote it (without the FSDP/DeepSpeed config), {start_over}.")
        differs = ", ".join(f"{key} {saved[key]!r} in the checkpoint, {here[key]!r} now" for key in here
                            if saved.get(key) != here[key])
        raise ConfigurationError(
            f"resume: checkpoint {str(path)!r} was written with other sharding ({differs}); sharded state resumes "
            f"only as it was written. Launch with kind {saved['kind']!r} and --num_processes "
            f"{saved['num_processes']}, {start_over}.")

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
