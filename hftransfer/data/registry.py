"""The source-loader registry: format name -> function that reads user data into standardised splits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets

from hftransfer.utils.hub_ids import is_repo_id

from .config import DataConfig
from .errors import DataError
from .report import SkippedItem
from .tables import TABLE_SUFFIXES


TRAIN_SPLIT_NAMES = ("train", "training")
VALIDATION_SPLIT_NAMES = ("validation", "val", "valid", "dev", "eval", "test")  # first present wins
BUILTIN_SOURCES = ("sklearn_digits",)


@dataclass
class SourceData:
    """What a loader returns: splits with the standard columns (`image`|`text`[, `text_pair`], `label`)."""

    train: datasets.Dataset
    validation: datasets.Dataset | None  # None: the pipeline holds out a stratified split of train
    label_names: list[str]
    modality: str  # "image" | "text"
    kind: str  # the format that read it
    name: str  # display name for model cards
    path: str | None  # folder, file or hub id
    validation_source: str = ""  # where validation came from, e.g. "val/ folder"
    skipped: list[SkippedItem] = field(default_factory=list)  # dropped files/rows (policy applied by the pipeline)
    warnings: list[str] = field(default_factory=list)


SourceLoader = Callable[[DataConfig, Any], SourceData]
SOURCE_LOADERS: dict[str, SourceLoader] = {}


def register_source(name: str) -> Callable[[SourceLoader], SourceLoader]:
    """Decorator: `@register_source("csv") def load_csv(config, arrays) -> SourceData`."""

    def decorator(loader: SourceLoader) -> SourceLoader:
        if name in SOURCE_LOADERS:
            raise ValueError(f"a source loader named {name!r} is already registered ({SOURCE_LOADERS[name]}).")
        SOURCE_LOADERS[name] = loader
        return loader

    return decorator


def get_loader(format: str) -> SourceLoader:
    if format not in SOURCE_LOADERS:
        raise DataError(f"format={format!r} has no registered loader; use one of {sorted(SOURCE_LOADERS)}.")
    return SOURCE_LOADERS[format]


def resolve_format(config: DataConfig, arrays: Any = None) -> str:
    """The loader for `config`: `config.format`, or for "auto" one inferred from the source."""
    if config.format != "auto":
        return config.format
    if arrays is not None:
        return "arrays"
    key, source = ("source", config.source) if config.source is not None else ("train", config.train)
    if source in BUILTIN_SOURCES:
        return str(source)
    path = Path(str(source)).expanduser()
    if path.is_dir():
        return _folder_format(path)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".npz":
            return "arrays"
        if suffix in TABLE_SUFFIXES:
            return TABLE_SUFFIXES[suffix]
        raise DataError(
            f"{key}={source!r} has suffix {suffix!r}, which format='auto' cannot read; use a folder of class folders, "
            f"a file with suffix in {sorted(TABLE_SUFFIXES) + ['.npz']}, or set format=..."
        )
    if is_repo_id(str(source), namespaced=True):
        return "hub"
    raise DataError(
        f"{key}={source!r} is not an existing path, a builtin source {list(BUILTIN_SOURCES)} or a hub id 'org/name'. "
        "Check the path, or set format='hub' for a hub dataset id without an organisation."
    )


def _folder_format(path: Path) -> str:
    """A folder with sub-folders is an image folder; a folder of split files (train.csv, dev.csv) is a table."""
    entries = [e for e in path.iterdir() if not e.name.startswith(".")]
    if any(e.is_dir() for e in entries):
        return "imagefolder"
    formats = {TABLE_SUFFIXES[e.suffix.lower()] for e in entries if e.suffix.lower() in TABLE_SUFFIXES}
    if len(formats) == 1:
        return formats.pop()
    raise DataError(
        f"cannot tell the format of folder {str(path)!r}: it holds no class sub-folders and "
        f"{'table files of several formats' if formats else 'no table files'}. Set format=... (and train=, "
        "validation=)."
    )
