"""One labelled split read against a fixed label set: a training run's test split, or the data `evaluate` scores.

Any supported source works (image folder, CSV/JSON/Parquet, `.npz`, hub split). Its labels are mapped to the given
label names *by name*; a label the model does not know is an error that names it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
from datasets.utils.tqdm import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

from . import hub, sources  # noqa: F401  (importing them registers their source loaders)
from .config import DataConfig
from .errors import DataError
from .registry import TRAIN_SPLIT_NAMES, VALIDATION_SPLIT_NAMES, get_loader, resolve_format
from .report import SkippedItem
from .tables import TABLE_SUFFIXES


SPLIT_NAMES = ("test", *TRAIN_SPLIT_NAMES, *VALIDATION_SPLIT_NAMES)


@dataclass
class LabelledSplit:
    """A split whose `label` column is a `ClassLabel` over exactly the label names it was read against."""

    dataset: datasets.Dataset
    modality: str  # "image" | "text"
    kind: str  # the format that read it
    name: str  # dataset display name
    split: str  # split name: the hub split, or the split folder/file name
    path: str | None
    skipped: list[SkippedItem] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.dataset)


def _local_split(source: Path, fmt: str, split: str | None, key: str) -> Path:
    """The folder/file of `split` inside `source` (a folder of split folders or split files), or `source` itself."""
    if not source.is_dir():
        if split is not None:
            raise DataError(
                f"split={split!r} was given but {key}={str(source)!r} is a single file; drop split=... (the whole "
                "file is used) or point at a folder of split files."
            )
        return source
    if fmt == "imagefolder":
        entries = {d.name.lower(): d for d in source.iterdir() if d.is_dir() and not d.name.startswith(".")}
    else:
        entries = {f.stem.lower(): f for f in source.iterdir() if f.is_file() and f.suffix.lower() in TABLE_SUFFIXES}
    if split is not None:
        if split.lower() not in entries:
            raise DataError(f"split={split!r} is not in {key}={str(source)!r}; available: {sorted(entries)}.")
        return entries[split.lower()]
    splits = sorted(name for name in entries if name in SPLIT_NAMES)
    if len(splits) == 1:
        return entries[splits[0]]
    if splits:
        raise DataError(
            f"{key}={str(source)!r} holds several splits {splits}; choose one with split=... (CLI: --split)."
        )
    if fmt != "imagefolder" and len(entries) == 1:
        return next(iter(entries.values()))
    return source


def load_labelled_split(
    config: DataConfig, label_names: list[str], split: str | None = None, key: str = "data"
) -> LabelledSplit:
    """Read one split of `config.source` and map its labels onto `label_names` (by name).

    Args:
        config: where the data is (`source`, `format`, `text_column`, `label_column`, `image_column`,
            `label_names` for integer labels, `hub_subset`, `on_bad_data`).
        label_names: the label set to map onto (a model's or a training run's classes).
        split: hub split name (default `"test"`), or the split folder/file inside a folder of splits.
        key: the argument named in error messages (e.g. `"data.test"`, `"DATA"`).
    """
    fmt = resolve_format(config)
    if fmt == "hub":
        split = split or "test"
        inner = dataclasses.replace(config, train_split=split, validation_split_name=split, test=None)
        where = f"split {split!r} of {config.source!r}"
    elif fmt in ("arrays", "sklearn_digits"):
        inner = dataclasses.replace(config, format=fmt, test=None)
        where = str(config.source)
    else:
        path = _local_split(Path(str(config.source)).expanduser(), fmt, split, key)
        inner = dataclasses.replace(
            config, format=fmt, source=None, train=str(path), validation=None, test=None,
            # Image folders may hold a subset of the classes: their names map below, whatever their order.
            label_names=None if fmt == "imagefolder" else config.label_names,
        )
        where = str(path)
    try:
        source = get_loader(fmt)(inner, None)
    except DataError as err:
        message = str(err)
        if fmt == "hub" and "available splits: " in message:  # the inner loader names its own train_split key
            available = message.split("available splits: ", 1)[1].split("]", 1)[0] + "]"
            raise DataError(f"{key}={split!r} is not a split of hub dataset {config.source!r}; available splits: "
                            f"{available}. Name one of them.") from err
        raise DataError(f"{key}={where}: {message}") from err
    skipped = [dataclasses.replace(s, split=split or "data") for s in source.skipped]
    if skipped and config.on_bad_data == "error":
        raise DataError(f"{key}={where}: bad item {skipped[0].item!r}: {skipped[0].reason}; set on_bad_data='skip'.")
    dataset = remap_labels(source.train, source.label_names, label_names, key, where)
    split_name = split or ("test" if fmt == "hub" else Path(where).stem)
    return LabelledSplit(dataset, source.modality, source.kind, source.name, split_name, source.path, skipped)


def remap_labels(
    dataset: datasets.Dataset, names: list[str], target: list[str], key: str, where: str
) -> datasets.Dataset:
    """Re-encode the `label` column from ids into `names` to ids into `target`, matching class names."""
    index = {name: i for i, name in enumerate(target)}
    present = sorted(set(np.asarray(dataset.with_format("arrow")["label"]).tolist())) if len(dataset) else []
    unknown = [names[i] for i in present if names[i] not in index]
    if unknown:
        raise DataError(
            f"{key}={where} has label(s) {unknown[:10]} that are not among the model's {len(target)} labels "
            f"{target[:20]}. Fix or drop those rows; integer labels need label_names=[...] to name them."
        )
    mapping = np.array([index.get(name, -1) for name in names], dtype=np.int64)
    ids = mapping[np.asarray(dataset.with_format("arrow")["label"], dtype=np.int64)]
    features = dataset.features.copy()
    features["label"] = datasets.ClassLabel(names=list(target))
    quiet = are_progress_bars_disabled()
    disable_progress_bars()  # a sub-second cast: no "Casting the dataset" bar in evaluate/predict output
    try:
        return dataset.remove_columns("label").add_column("label", ids.tolist()).cast(features)
    finally:
        if not quiet:
            enable_progress_bars()
