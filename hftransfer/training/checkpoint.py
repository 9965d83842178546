"""Training checkpoints for resume: where they live and what names their files have (both kinds), and the unsharded
kind itself: model + optimizer + scheduler + RNG + loop position, written atomically. Sharded state (FSDP, ZeRO) is
written by accelerate, in ``run_checkpoints``."""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hftransfer.utils.io import atomic_directory, load_state_dict, read_json, save_state_dict, write_json


CHECKPOINT_DIR = "checkpoints"  # in output_dir, next to:
MODEL_DIR = "model"  # the best model
METRICS_FILE = "metrics.json"  # the run's summary, written last: its presence marks a finished run
_STEP_RE = re.compile(r"^step_(\d+)$")
_LEFTOVER_RE = re.compile(r"^\.step_\d+\.(tmp|old)-")  # atomic_directory's temp names for a checkpoint folder
# In each checkpoint folder, both kinds (one process's full state, or sharded state written by accelerate):
TRAINER_STATE = "trainer_state.json"  # the loop state (TrainState.to_dict); a folder without it is no checkpoint
OBJECTIVE_STATE = "objective.safetensors"  # the objective's tensors (discriminator, EMA teacher), when it has any
SHARDING = "sharding.json"  # sharded checkpoints only: {"kind": "fsdp" | "zero<N>", "num_processes": N}
PROCESS_LOSSES = "process_losses.json"  # sharded checkpoints only: each process's [loss_sum, loss_count], by rank


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda_{i}"] = state
    np_state = np.random.get_state()
    plain = {"python": _jsonable(random.getstate()),
             "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]]}
    return tensors, plain


def _jsonable(value: Any) -> Any:
    return [_jsonable(v) for v in value] if isinstance(value, (tuple, list)) else value


def _tupled(value: Any) -> Any:
    return tuple(_tupled(v) for v in value) if isinstance(value, list) else value


def checkpoint_path(output_dir: Path, global_step: int) -> Path:
    """The folder of the checkpoint taken after optimizer step ``global_step``."""
    return Path(output_dir) / CHECKPOINT_DIR / f"step_{global_step:08d}"


def save_checkpoint(output_dir: Path, model, optimizer, scheduler, state: dict[str, Any], keep: int,
                    objective_state: dict[str, torch.Tensor] | None = None,
                    process_losses: list[list[float]] | None = None) -> Path:
    """Write ``checkpoints/step_<global_step>`` atomically and keep only the newest ``keep`` checkpoints.

    ``objective_state``: the training objective's tensors (discriminator, EMA teacher), restored by
    :func:`load_objective_state`. ``process_losses``: every process's running loss of the epoch (several processes).
    """
    final = checkpoint_path(output_dir, state["global_step"])
    tensors, plain = _rng_state()
    with atomic_directory(final) as tmp:
        save_state_dict(model.state_dict(), tmp / "model.safetensors")
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optimizer.pt")
        save_state_dict(tensors, tmp / "rng.safetensors")
        write_json(tmp / TRAINER_STATE, {**state, "rng": plain})
        write_objective_state(tmp, objective_state)
        if process_losses is not None:
            write_json(tmp / PROCESS_LOSSES, process_losses)
    remove_old_checkpoints(output_dir, keep)
    return final


def write_objective_state(folder: Path, objective_state: dict[str, torch.Tensor] | None) -> None:
    """``folder/objective.safetensors`` when there are tensors (read back by :func:`load_objective_state`)."""
    if objective_state:
        save_state_dict({k: v.detach().cpu().contiguous() for k, v in objective_state.items()},
                        Path(folder) / OBJECTIVE_STATE)


def remove_old_checkpoints(output_dir: Path, keep: int) -> None:
    """Keep only the newest ``keep`` checkpoints (of either kind), and drop the temp folders of a save that was killed
    (``.step_*.tmp-*`` / ``.step_*.old-*``: never a checkpoint; called after a save completed, so none is in use)."""
    root = Path(output_dir) / CHECKPOINT_DIR
    stale = [p for p in root.glob(".step_*") if p.is_dir() and _LEFTOVER_RE.match(p.name)] if root.is_dir() else []
    for old in [*list_checkpoints(output_dir)[:-keep], *stale]:
        shutil.rmtree(old, ignore_errors=True)


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints of either kind, oldest first (temp folders of an interrupted save are not listed)."""
    root = Path(output_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _STEP_RE.match(p.name) and (p / TRAINER_STATE).is_file()]
    return sorted(found, key=lambda p: int(_STEP_RE.match(p.name).group(1)))


def load_checkpoint(path: Path, model, optimizer, scheduler) -> dict[str, Any]:
    """Restore everything saved by :func:`save_checkpoint`; returns the loop state."""
    path = Path(path)
    model.load_state_dict(load_state_dict(path / "model.safetensors"))
    # Our own file (never from the hub), read with weights_only=True: tensors and plain containers only.
    opt = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(opt["optimizer"])
    scheduler.load_state_dict(opt["scheduler"])
    state = read_json(path / TRAINER_STATE)
    rng_tensors = load_state_dict(path / "rng.safetensors")
    torch.set_rng_state(rng_tensors["torch"])
    if torch.cuda.is_available():
        cuda = [rng_tensors[k] for k in sorted(rng_tensors) if k.startswith("cuda_")]
        if cuda:
            torch.cuda.set_rng_state_all(cuda)
    plain = state.pop("rng")
    random.setstate(_tupled(plain["python"]))
    np_state = plain["numpy"]
    np.random.set_state((np_state[0], np.asarray(np_state[1], dtype=np.uint32), *np_state[2:]))
    return state


def load_objective_state(path: Path) -> dict[str, torch.Tensor]:
    """The objective's tensors saved with a checkpoint (empty when it had none)."""
    file = Path(path) / OBJECTIVE_STATE
    return load_state_dict(file) if file.is_file() else {}


def checkpoint_sharding(path: Path) -> dict[str, Any] | None:
    """How a checkpoint's state is sharded (``SHARDING``'s content); ``None`` for one process's full state."""
    file = Path(path) / SHARDING
    return read_json(file) if file.is_file() else None
