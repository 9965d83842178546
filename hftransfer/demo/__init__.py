"""`hftransfer demo`: a Gradio app (image upload or text box, top-k labels, the card summary) and Space writer.

Names load lazily: `hftransfer.cli` registers the sub-command without importing Gradio.
"""

from __future__ import annotations

import importlib
from typing import Any


_EXPORTS = {"build_app": "app", "demo": "app", "write_space": "space"}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
