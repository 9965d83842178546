"""Atomic folder writes and safe weight loading."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from hftransfer.errors import UnsafeCheckpointError


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


@contextlib.contextmanager
def atomic_directory(final_dir: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temp folder next to ``final_dir``; on success it replaces ``final_dir`` in one rename.

    If the body raises, the temp folder is removed and ``final_dir`` is left as it was.
    """
    final_dir = Path(final_dir)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    if final_dir.exists() and not final_dir.is_dir():
        raise FileExistsError(f"save_directory={str(final_dir)!r} exists and is not a folder; pick another path.")
    if final_dir.exists() and not overwrite:
        raise FileExistsError(f"save_directory={str(final_dir)!r} exists; pass overwrite=True to replace it.")
    tmp = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.tmp-", dir=final_dir.parent))
    try:
        yield tmp
        if final_dir.exists():
            # Rename the old folder away first so the swap never leaves a mixed folder behind.
            old = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.old-", dir=final_dir.parent))
            old.rmdir()
            final_dir.rename(old)
            tmp.rename(final_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def save_state_dict(state_dict: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """Save tensors as safetensors (contiguous, shared storage broken)."""
    tensors = {k: v.detach().contiguous().clone() if _shares_storage(v, state_dict) else v.detach().contiguous()
               for k, v in state_dict.items()}
    save_file(tensors, str(path), metadata={"format": "pt", **(metadata or {})})


def _shares_storage(tensor: torch.Tensor, state_dict: dict[str, torch.Tensor]) -> bool:
    ptr = tensor.untyped_storage().data_ptr()
    return sum(1 for t in state_dict.values() if t.untyped_storage().data_ptr() == ptr) > 1


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file. Pickle files are refused: see :func:`load_pickle_weights`."""
    path = Path(path)
    if path.suffix in PICKLE_SUFFIXES:
        raise UnsafeCheckpointError(pickle_refusal_message(path))
    return load_file(str(path))


def load_pickle_weights(path: Path) -> dict[str, torch.Tensor]:
    """Opt-in loader for pickle checkpoints: tensors only (``weights_only=True``), never arbitrary objects."""
    return torch.load(str(path), map_location="cpu", weights_only=True)


def pickle_refusal_message(where: str | os.PathLike) -> str:
    return (
        f"Only pickle weights (.bin/.pt/.pth/.ckpt) were found at {str(where)!r}. hftransfer loads safetensors only, "
        "because unpickling can run arbitrary code. If you trust the source, pass allow_pickle=True "
        "(tensors are then read with torch.load(weights_only=True)), or convert the checkpoint to safetensors."
    )


def find_weight_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """Return (safetensors files, pickle files) directly inside ``folder``."""
    files = [p for p in Path(folder).iterdir() if p.is_file()]
    return ([p for p in files if p.suffix == ".safetensors"], [p for p in files if p.suffix in PICKLE_SUFFIXES])
