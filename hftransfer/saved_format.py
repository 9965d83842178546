"""The on-disk format of a model saved by hftransfer: file names, format version, and reading its config.

A bottom layer: ``backbones/``, ``hub/``, ``modeling.py`` and ``training/`` import these names from here, so each
fact lives once. It imports nothing from hftransfer but ``errors`` and ``utils``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hftransfer.errors import ForeignFolderError
from hftransfer.utils.io import read_json


FORMAT_VERSION = 1
HFTRANSFER_CONFIG = "hftransfer_config.json"
FULL_WEIGHTS = "model.safetensors"
TRAINED_WEIGHTS = "adapter_model.safetensors"
WEIGHT_FILES = {"full": FULL_WEIGHTS, "trained": TRAINED_WEIGHTS}  # hftransfer_config.json "weights" -> file
BACKBONE_DIR = "backbone"  # the backbone's architecture files (config.json, tokenizer, ...)
HEAD_PREFIX = "head."  # names of the classification head's parameters (``AutoTransfer.head``) start with this


def read_model_config(folder: str | Path, origin: str, fix: str) -> dict[str, Any]:
    """Read ``hftransfer_config.json``; a broken or foreign file is a :class:`ForeignFolderError` ending in ``fix``."""
    try:
        config = read_json(Path(folder) / HFTRANSFER_CONFIG)
    except ValueError as err:
        raise ForeignFolderError(f"{origin!r}: {HFTRANSFER_CONFIG} is not valid JSON ({err}). {fix}") from err
    if not isinstance(config, dict) or config.get("format") != "hftransfer":
        raise ForeignFolderError(
            f"{origin!r}: {HFTRANSFER_CONFIG} is not an hftransfer model config (no \"format\": \"hftransfer\"), "
            f"so this is not a model saved by hftransfer. {fix}"
        )
    return config
