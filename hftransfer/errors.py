"""Typed exceptions. Every message names the argument, what was received and how to fix it."""

from __future__ import annotations

import warnings


class HFTransferError(Exception):
    """Base class of every error hftransfer raises on purpose."""


class ModelNameError(HFTransferError, ValueError):
    """A model name or path could not be resolved to a backbone source."""


class ConfigurationError(HFTransferError, ValueError):
    """Arguments that contradict each other or a backbone that cannot do the asked task."""


class UnsafeCheckpointError(HFTransferError):
    """Only pickle weights were found where safetensors are required."""


class ForeignFolderError(HFTransferError, ValueError):
    """A folder saved by another tool that hftransfer cannot load as is."""


class OfflineError(HFTransferError, OSError):
    """The hub is unreachable (or HF_HUB_OFFLINE is set) and the files are not cached."""


class OutputDirError(HFTransferError, FileExistsError):
    """``output_dir`` holds a finished run, or is a file (or under one) where a folder is needed."""


class InputFileError(HFTransferError, OSError):
    """A file given as input (an image to predict, a config file) is missing or cannot be read."""


class ModelCardError(HFTransferError, ValueError):
    """An existing model card (README.md) whose hftransfer markers are broken, so it cannot be re-rendered."""


class HFTransferWarning(UserWarning):
    """Base class of the warnings hftransfer gives users; shown as ``hftransfer warning: <message>``."""


class PerformanceWarning(HFTransferWarning):
    """A setting that works but runs much slower here than an alternative the message names."""


class AdaptationWarning(HFTransferWarning):
    """Domain adaptation lowered the labelled target split's metric below the model it started adapting."""


_OTHER_FORMAT = warnings.formatwarning  # what formatted warnings before hftransfer was imported


def format_warning(message, category, filename, lineno, line=None) -> str:
    """Our own warnings as a user reads them (the message, not our file and line); others as before."""
    if issubclass(category, HFTransferWarning):
        return f"hftransfer warning: {message}\n"
    return _OTHER_FORMAT(message, category, filename, lineno, line)


def install_warning_format() -> None:
    """Route ``warnings.formatwarning`` through :func:`format_warning` (other warnings keep their format)."""
    warnings.formatwarning = format_warning


ACCEPTED_MODEL_FORMS = """Accepted forms:
  - a timm hub id:                 'timm/resnet50.a1_in1k' or 'hf-hub:org/name'
  - a timm architecture:           'resnet50', 'vit_base_patch16_224.augreg_in21k' or explicitly 'timm:resnet50'
  - a timm folder:                 'local-dir:/path/to/folder' (written by timm.models.save_for_hf)
  - a transformers hub id:         'google/vit-base-patch16-224', 'bert-base-uncased' or 'transformers:org/name'
  - a transformers folder:         './path/with/config.json'
  - a packaged offline backbone:   'packaged:efficientnet_lite0', 'packaged:all-MiniLM-L6-v2'
  - a folder saved by hftransfer:  './my-finetuned-model' (holds hftransfer_config.json)"""
