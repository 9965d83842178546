"""Saved models as plain weights: read a folder, check that several can be averaged, average them, write the result.

Works on the tensors a folder stores (``model.safetensors`` for full weights, ``adapter_model.safetensors`` for the
weights an adapter method trained), so an average of adapter folders is an adapter folder of the same base.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hftransfer.errors import ConfigurationError, ForeignFolderError, OutputDirError
from hftransfer.modeling import AutoTransfer
from hftransfer.saved_format import BACKBONE_DIR, HFTRANSFER_CONFIG, WEIGHT_FILES, read_model_config
from hftransfer.utils.io import atomic_directory, load_state_dict, save_state_dict, write_json


if TYPE_CHECKING:
    from hftransfer.modeling import AutoTransfer


# Config entries that must be equal for weights to be averaged, with the words an error uses for them.
_SHARED_CONFIG = (("backbone", "base model"), ("task", "task"), ("id2label", "label map"), ("method", "method"),
                  ("head", "head"), ("weights", "stored weights (full / trained only)"))


@dataclass
class SavedWeights:
    """One model folder saved by hftransfer: where it is, its config and the tensors of its weights file."""

    folder: Path
    config: dict[str, Any]
    state: dict[str, torch.Tensor]

    @property
    def weights_file(self) -> str:
        return WEIGHT_FILES[self.config["weights"]]


def read_saved(folder: str | Path, key: str) -> SavedWeights:
    """Read a folder saved by hftransfer (or a run's output_dir holding ``model/``); ``key`` names the argument."""
    path = Path(folder)
    if (path / "model" / HFTRANSFER_CONFIG).is_file():
        path = path / "model"
    if not path.is_dir():
        raise ConfigurationError(f"{key}={str(folder)!r} is not a folder; pass a model folder saved by hftransfer "
                                 "(save_pretrained, or a training run's output_dir).")
    if not (path / HFTRANSFER_CONFIG).is_file():
        raise ForeignFolderError(f"{key}={str(folder)!r} has no {HFTRANSFER_CONFIG}, so it is not a model saved by "
                                 "hftransfer; pass a folder written by save_pretrained or a training run.")
    config = read_model_config(path, str(folder), "Pass a model folder saved by hftransfer.")
    kind = config.get("weights")
    if kind not in WEIGHT_FILES:
        raise ForeignFolderError(f"{key}={str(folder)!r}: {HFTRANSFER_CONFIG} has weights={kind!r}; expected one of "
                                 f"{sorted(WEIGHT_FILES)}. Save the model again.")
    file = path / WEIGHT_FILES[kind]
    if not file.is_file():
        raise ForeignFolderError(f"{key}={str(folder)!r} lacks {file.name}; the save was incomplete. Save it again.")
    return SavedWeights(path, config, load_state_dict(file))


def same_format(models: Sequence[SavedWeights]) -> bool:
    """Whether the folders store the same kind of tensors (same method and options, full or trained-only)."""
    return all(m.config.get(k) == models[0].config.get(k) for m in models for k in ("method", "weights"))


def as_full_weights(saved: SavedWeights) -> tuple[SavedWeights, AutoTransfer]:
    """The model of ``saved`` loaded (its base backbone fetched for adapter-only folders) with any adapters merged,
    as full weights: how models saved by different methods (a linear probe and its fine-tuned model) are compared
    and mixed."""
    model = AutoTransfer.from_pretrained(saved.folder).merge_adapters()
    return SavedWeights(saved.folder, model.config_dict("full"), dict(model.state_dict())), model


def differences(a: SavedWeights, b: SavedWeights, skip: Sequence[str] = (), tensors: bool = True) -> list[str]:
    """What keeps ``b`` from being averaged with ``a`` (empty when nothing does). ``skip``: config entries not to
    compare; ``tensors=False``: compare the configs only."""
    found = []
    for entry, words in _SHARED_CONFIG:
        x, y = _comparable(a.config, entry), _comparable(b.config, entry)
        if entry not in skip and x != y:
            found.append(f"{words} differs ({entry}: {_short(x)} vs {_short(y)})")
    if not tensors:
        return found
    only_a, only_b = sorted(set(a.state) - set(b.state)), sorted(set(b.state) - set(a.state))
    if only_a or only_b:
        found.append(f"parameter names differ (only in the first: {only_a[:3]} ({len(only_a)}); only in the "
                     f"second: {only_b[:3]} ({len(only_b)}))")
    common = sorted(set(a.state) & set(b.state))
    shapes = [f"{k} {tuple(a.state[k].shape)} vs {tuple(b.state[k].shape)}" for k in common
              if a.state[k].shape != b.state[k].shape]
    if shapes:
        found.append(f"parameter shapes differ ({len(shapes)}: {shapes[:3]})")
    dtypes = [f"{k} {a.state[k].dtype} vs {b.state[k].dtype}" for k in common
              if a.state[k].dtype != b.state[k].dtype]
    if dtypes:
        found.append(f"parameter dtypes differ ({len(dtypes)}: {dtypes[:3]})")
    return found


def check_compatible(models: Sequence[SavedWeights], keys: Sequence[str], skip: Sequence[str] = (),
                     tensors: bool = True) -> None:
    """Raise a :class:`ConfigurationError` naming what differs when ``models`` cannot be averaged (see
    :func:`differences` for ``skip`` and ``tensors``)."""
    first = models[0]
    for model, key in zip(models[1:], keys[1:]):
        found = differences(first, model, skip, tensors)
        if found:
            raise ConfigurationError(
                f"{key}={str(model.folder)!r} cannot be averaged with {keys[0]}={str(first.folder)!r}: "
                f"{'; '.join(found)}. Average only models fine-tuned from the same start (same base model, method, "
                "head and label map), e.g. the seeds of one config.")


def check_output_dir(output_dir: str | Path, inputs: Sequence[SavedWeights], overwrite: bool) -> Path:
    """Refuse an output folder that is one of the inputs, or that exists (unless ``overwrite``)."""
    output = Path(output_dir)
    for model in inputs:
        if output.resolve() in (model.folder.resolve(), model.folder.parent.resolve()):
            raise OutputDirError(f"output_dir={str(output_dir)!r} is an input model's folder; writing there would "
                                 "replace it. Pick a new folder.")
    if output.exists() and not output.is_dir():
        raise OutputDirError(f"output_dir={str(output_dir)!r} is a file; pick a folder path.")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise OutputDirError(f"output_dir={str(output_dir)!r} exists and is not empty; pick a new folder or pass "
                             "overwrite=True (CLI: --overwrite) to replace it.")
    return output


def write_model(template: SavedWeights, state: dict[str, torch.Tensor], output_dir: Path,
                extra_files: dict[str, Any] | None = None) -> Path:
    """Write ``state`` as a model folder like ``template`` (same config and backbone files), atomically.

    ``extra_files``: name -> JSON-able object (written as JSON) or a callable that writes the file at the path it is
    given (a plot).
    """
    with atomic_directory(output_dir) as tmp:
        if (template.folder / BACKBONE_DIR).is_dir():
            shutil.copytree(template.folder / BACKBONE_DIR, tmp / BACKBONE_DIR)
        kind = template.config["weights"]
        save_state_dict(state, tmp / template.weights_file, metadata={"hftransfer_weights": kind})
        write_json(tmp / HFTRANSFER_CONFIG, template.config)
        for name, content in (extra_files or {}).items():
            if callable(content):
                content(tmp / name)
            else:
                write_json(tmp / name, content)
    return output_dir


def _comparable(config: dict[str, Any], entry: str) -> Any:
    """A config entry as far as weights are concerned (the head's dropout rate does not change its tensors)."""
    value = config.get(entry)
    if entry == "head" and isinstance(value, dict):
        return {k: v for k, v in value.items() if k != "dropout"}
    return value


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
