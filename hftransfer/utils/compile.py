"""``torch.compile`` for hftransfer models: in place, with the reason when it cannot apply, and its time measured.

``nn.Module.compile`` compiles the module's ``__call__`` without wrapping it, so parameter names (and with them saving,
checkpoints, resume, DDP and adapter saving) stay exactly as in eager mode.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from typing import Any

import torch
from torch import nn


def compile_unavailable_reason(device: torch.device | str) -> str | None:
    """Why ``torch.compile`` cannot run here (None when it can)."""
    try:
        import torch._dynamo as dynamo
    except ImportError as err:  # pragma: no cover - builds without dynamo
        return f"this torch build has no torch._dynamo ({err})"
    if not dynamo.is_dynamo_supported():
        return f"torch {torch.__version__} does not support torch.compile on Python {sys.version.split()[0]}"
    if torch.device(device).type == "cpu":
        compilers = [c for c in (os.environ.get("CXX"), "g++", "c++", "clang++") if c]
        if not any(shutil.which(c) for c in compilers):
            return ("the inductor backend needs a C++ compiler on the CPU and none was found (looked for "
                    f"{', '.join(compilers)}); install g++ or set CXX")
    return None


def compile_in_place(module: nn.Module, device: torch.device | str, **options: Any) -> str | None:
    """Compile ``module`` in place; returns None on success, else the reason it stays eager."""
    reason = compile_unavailable_reason(device)
    if reason is None:
        module.compile(**options)
    return reason


class CompileTimer:
    """Seconds spent compiling (dynamo tracing + backend, lazy backward included) while the timer is active."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started: float | None = None

    def _start(self, _args: Any) -> None:
        self._started = time.perf_counter()

    def _end(self, _args: Any) -> None:
        if self._started is not None:
            self.seconds += time.perf_counter() - self._started
            self._started = None

    def __enter__(self) -> CompileTimer:
        from torch._dynamo.callback import callback_handler

        callback_handler.register_start_callback(self._start)
        callback_handler.register_end_callback(self._end)
        return self

    def __exit__(self, *exc: Any) -> None:
        from torch._dynamo.callback import callback_handler

        callback_handler.remove_start_callback(self._start)
        callback_handler.remove_end_callback(self._end)


def compile_for_inference(module: nn.Module, device: torch.device | str) -> bool:
    """``--compile`` of predict/evaluate: compile ``module`` in place with dynamic shapes (batch sizes and text lengths
    vary between batches, so static shapes would recompile per length). Where it cannot apply, stderr says why and the
    caller goes on eagerly. True when compiled."""
    reason = compile_in_place(module, device, dynamic=True)
    if reason is not None:
        print(f"--compile cannot apply: {reason}. Running without compiling.", file=sys.stderr)
    return reason is None
