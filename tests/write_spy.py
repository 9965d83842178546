"""Records every file a process writes under one folder, by any route, for "only the main process writes" checks.

Python-level writes are seen through the interpreter's audit events (``open`` in a writing mode, whatever the caller:
``open``, ``io.open``, ``Path.write_text/write_bytes/open``, ``os.open``; ``os.rename``/``os.replace``,
``os.mkdir``, ``shutil.copyfile``); the writers that open files in C++ or Rust (``torch.save``,
``safetensors.torch.save_file``/``save_model``) are wrapped, and every reference already imported elsewhere is
replaced too. Nothing is swallowed: a path the spy cannot read fails the process.

Used by child processes only (an audit hook cannot be removed): ``install(root, record_file)`` as the first thing a
script does; at exit the sorted list of written paths goes to ``record_file`` (JSON).
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from pathlib import Path
from typing import Any


WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def install(root: str | Path, record_file: str | Path) -> list[str]:
    """Start recording writes under ``root``; returns the live list of recorded paths."""
    import safetensors.torch
    import torch

    root = Path(root).resolve()
    record_file = Path(record_file).resolve()
    if record_file.is_relative_to(root):
        raise ValueError(f"record_file {record_file} must lie outside the watched folder {root}")
    writes: list[str] = []
    busy = False

    def record(target: Any) -> None:
        if isinstance(target, int):
            return  # a file descriptor: its open() was recorded
        if hasattr(target, "write"):  # a file object handed to torch.save
            target = getattr(target, "name", None)
            if target is None:
                writes.append("<unnamed file object>")
                return
        path = Path(os.fsdecode(target)).resolve()
        if path.is_relative_to(root):
            writes.append(str(path))

    def audit(event: str, args: tuple) -> None:
        nonlocal busy
        if busy:
            return
        busy = True
        try:
            if event == "open":
                path, mode, flags = args
                writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & WRITE_FLAGS)
                if path is not None and writing:
                    record(path)
            elif event == "os.rename":  # os.rename and os.replace
                record(args[1])
            elif event in ("os.mkdir", "os.truncate"):
                record(args[0])
            elif event in ("os.symlink", "os.link", "shutil.copyfile"):  # (source, destination, ...)
                record(args[1])
        finally:
            busy = False

    sys.addaudithook(audit)

    def wrap(func, path_arg: int):
        def spy(*args, **kwargs):
            record(args[path_arg] if len(args) > path_arg else next(iter(kwargs.values())))
            return func(*args, **kwargs)

        spy.__wrapped__ = func
        return spy

    originals = {
        (torch, "save"): wrap(torch.save, 1),
        (safetensors.torch, "save_file"): wrap(safetensors.torch.save_file, 1),
        (safetensors.torch, "save_model"): wrap(safetensors.torch.save_model, 1),
    }
    replaced = {id(getattr(module, name)): spy for (module, name), spy in originals.items()}
    for (module, name), spy in originals.items():
        setattr(module, name, spy)
    for module in list(sys.modules.values()):  # references bound by `from ... import save_file` before now
        for name, value in list(getattr(module, "__dict__", {}).items()):
            if id(value) in replaced and value is not replaced[id(value)]:
                setattr(module, name, replaced[id(value)])

    @atexit.register
    def _dump() -> None:
        nonlocal busy
        busy = True
        record_file.write_text(json.dumps(sorted(set(writes))))

    return writes
