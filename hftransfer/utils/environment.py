"""Environment variables that third-party code must not change behind the caller's back."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def environment_kept(*names: str) -> Iterator[None]:
    """Restore ``os.environ[name]`` for each of ``names`` (or its absence) on exit, whatever happened inside."""
    saved = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
