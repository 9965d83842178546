"""Hub I/O: safe downloads (:mod:`~hftransfer.hub.fetch`), one-commit pushes (:mod:`~hftransfer.hub.push`), pulls for
offline use (:mod:`~hftransfer.hub.pull`) and model cards (:mod:`~hftransfer.hub.card`).

Names are imported lazily: ``huggingface_hub`` reads ``HF_ENDPOINT``/``HF_HUB_OFFLINE`` when it is first imported,
so importing ``hftransfer.hub`` must not import it early.
"""

from __future__ import annotations

import importlib
from typing import Any


_EXPORTS = {
    "push_folder": "push",
    "plan_upload": "push",
    "HubPushError": "push",
    "PullResult": "pull",  # the function is hftransfer.hub.pull.pull (or hftransfer.pull): the module has its name
    "fetch_file": "fetch",
    "fetch_snapshot": "fetch",
    "FetchedRepo": "fetch",
    "hub_reachable": "fetch",
    "hub_offline_forced": "fetch",
    "CardInfo": "card",
    "DatasetInfo": "card",
    "render_model_card": "card",
    "write_model_card": "card",
    "add_eval_results": "card",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"hftransfer.hub.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'hftransfer.hub' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_EXPORTS))


__all__ = sorted(_EXPORTS)
