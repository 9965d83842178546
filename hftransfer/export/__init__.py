"""`hftransfer export`: ONNX export with a parity check against PyTorch, int8, and an onnxruntime runner.

Names load lazily, so `hftransfer.cli` can register the sub-command without importing torch or onnx.
"""

from __future__ import annotations

import importlib
from typing import Any


_EXPORTS = {
    "export": "api", "ExportResult": "api",
    "ExportError": "errors", "ExportWarning": "errors", "ParityError": "errors",
    "is_export_folder": "files",
    "OnnxClassifier": "runtime",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
