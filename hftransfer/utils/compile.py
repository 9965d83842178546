"""``torch.compile`` for hftransfer models: in place, with the reason when it cannot apply, and its time measured.

``nn.Module.compile`` compiles the module's ``__call__`` without wrapping it, so parameter names (and with them saving,
checkpoints, resume, DDP and adapter saving) stay exactly as in eager mode.
"""

from __future__ import annotations

import ctypes
import functools
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn


# C++ drivers tried, in order, when the one inductor is configured with (``CXX``, default g++) cannot build kernels.
CPP_DRIVERS = ("g++", "c++", "clang++")

# A shared library using the C++ standard library, as inductor's CPU kernels do (their bounds checks format messages
# with std::ostringstream). A C driver (CXX=gcc or cc) compiles it but does not link libstdc++, so it fails to load.
_PROBE_SOURCE = """#include <sstream>
extern "C" int hftransfer_probe() { std::ostringstream out; out << 42; return (int) out.str().size(); }
"""


@dataclass(frozen=True)
class CompileOutcome:
    """What ``compile_in_place`` did: ``compiled``, a note (why not, or what it changed so it could) and, on the CPU,
    the C++ compiler inductor builds kernels with."""

    compiled: bool
    note: str | None = None
    cpp_compiler: str | None = None


@functools.cache
def cpp_build_problem(compiler: str) -> str | None:
    """Why ``compiler`` cannot build a loadable shared library that uses the C++ standard library (None when it can).

    Cached per process; takes about a second (one small compile and link)."""
    with tempfile.TemporaryDirectory(prefix="hftransfer-cxx-") as tmp:
        source, library = Path(tmp) / "probe.cpp", Path(tmp) / "probe.so"
        source.write_text(_PROBE_SOURCE)
        try:
            built = subprocess.run([*shlex.split(compiler), "-shared", "-fPIC", str(source), "-o", str(library)],
                                   capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.SubprocessError) as err:
            return f"{compiler!r} did not run ({err})"
        if built.returncode != 0:
            return f"{compiler!r} failed on a small C++ file: {built.stderr.strip()[-300:]}"
        try:
            if ctypes.CDLL(str(library)).hftransfer_probe() != 2:
                return f"a library built by {compiler!r} returned a wrong result"
        except OSError as err:
            return f"a library built by {compiler!r} does not load ({err})"
    return None


def _inductor_compilers() -> list[str]:
    """The C++ compilers inductor is configured to try (``torch._inductor.config.cpp.cxx``, from ``CXX``)."""
    from torch._inductor import config  # heavy: torch._inductor, loaded only when compiling

    configured = config.cpp.cxx if isinstance(config.cpp.cxx, (list, tuple)) else (config.cpp.cxx,)
    return [c for c in configured if c]


def _exists(compiler: str) -> bool:
    words = shlex.split(compiler)
    return bool(words) and shutil.which(words[0]) is not None


def choose_cpp_compiler() -> tuple[str | None, str | None]:
    """``(compiler, note)`` for inductor on the CPU: the configured compiler when it builds loadable C++ libraries,
    else the first of ``CPP_DRIVERS`` that does (the note says why it was swapped); ``(None, reason)`` if none does."""
    configured = _inductor_compilers()
    tried: list[str] = []
    for compiler in dict.fromkeys([*configured, *CPP_DRIVERS]):
        if not _exists(compiler):
            continue
        problem = cpp_build_problem(compiler)
        if problem is None:
            if configured and compiler == configured[0]:
                return compiler, None
            note = (f"the configured C++ compiler cannot build inductor kernels ({'; '.join(tried)}); "
                    f"using {compiler!r} instead (set CXX to a C++ compiler such as g++ to choose)")
            return compiler, note
        tried.append(problem)
    looked = ", ".join(dict.fromkeys([*configured, *CPP_DRIVERS]))
    if not tried:
        return None, ("the inductor backend needs a C++ compiler on the CPU and none was found "
                      f"(looked for {looked}); install g++ or set CXX")
    return None, (f"no C++ compiler here builds loadable inductor kernels (tried {looked}: {'; '.join(tried)}); "
                  "install g++ or set CXX to a working C++ compiler")


def compile_unavailable_reason() -> str | None:
    """Why this torch and Python cannot run ``torch.compile`` at all (None when they can)."""
    try:
        import torch._dynamo as dynamo  # heavy: torch._dynamo, loaded only when compiling
    except ImportError as err:  # pragma: no cover - builds without dynamo
        return f"this torch build has no torch._dynamo ({err})"
    if not dynamo.is_dynamo_supported():
        return f"torch {torch.__version__} does not support torch.compile on Python {sys.version.split()[0]}"
    return None


def compile_in_place(module: nn.Module, device: torch.device | str, **options: Any) -> CompileOutcome:
    """Compile ``module`` in place when it can; on the CPU, first make sure inductor has a C++ compiler whose kernels
    load (switching inductor's ``cpp.cxx`` to a working driver when the configured one, e.g. ``CXX=gcc``, cannot)."""
    reason = compile_unavailable_reason()
    if reason is not None:
        return CompileOutcome(False, reason)
    compiler = note = None
    if torch.device(device).type == "cpu":
        compiler, note = choose_cpp_compiler()
        if compiler is None:
            return CompileOutcome(False, note)
        if note is not None:  # the configured compiler was swapped for a working one
            from torch._inductor import config  # heavy: torch._inductor, loaded only when compiling

            config.cpp.cxx = (None, compiler)
    module.compile(**options)
    return CompileOutcome(True, note, compiler)


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
        from torch._dynamo.callback import callback_handler  # heavy: torch._dynamo, loaded only when compiling

        callback_handler.register_start_callback(self._start)
        callback_handler.register_end_callback(self._end)
        return self

    def __exit__(self, *exc: Any) -> None:
        from torch._dynamo.callback import callback_handler  # heavy: torch._dynamo, loaded only when compiling

        callback_handler.remove_start_callback(self._start)
        callback_handler.remove_end_callback(self._end)


def compile_for_inference(module: nn.Module, device: torch.device | str) -> bool:
    """``--compile`` of predict/evaluate: compile ``module`` in place with dynamic shapes (batch sizes and text lengths
    vary between batches, so static shapes would recompile per length). Where it cannot apply, stderr says why and the
    caller goes on eagerly. True when compiled."""
    outcome = compile_in_place(module, device, dynamic=True)
    if not outcome.compiled:
        print(f"--compile cannot apply: {outcome.note}. Running without compiling.", file=sys.stderr)
    elif outcome.note:
        print(f"--compile: {outcome.note}", file=sys.stderr)
    return outcome.compiled
