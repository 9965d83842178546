"""Loaders for local data: image folders, table files, in-memory arrays and the builtin sklearn digits."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .config import DataConfig
from .errors import DataError
from .images import check_images, encode_image_arrays, image_dataset, scan_class_folders
from .labels import encode_labels, missing_labels
from .registry import TRAIN_SPLIT_NAMES, VALIDATION_SPLIT_NAMES, SourceData, register_source
from .report import SkippedItem
from .tables import TABLE_SUFFIXES, clean_text_frame, read_table, text_dataset


def _existing(value: str, key: str) -> Path:
    path = Path(value).expanduser()
    if not path.exists():
        raise DataError(f"{key}={value!r} does not exist; pass an existing folder or file (relative to {Path.cwd()}).")
    return path.resolve()


def _display_name(path: Path) -> str:
    """Folder or file stem, or the parent's name when that is a split name (`hymenoptera/train` -> `hymenoptera`)."""
    stem = path.stem if path.is_file() else path.name
    return path.parent.name if stem.lower() in TRAIN_SPLIT_NAMES + VALIDATION_SPLIT_NAMES else stem


def _not_test(candidates: dict[str, Path], config: DataConfig) -> dict[str, Path]:
    """Split folders/files other than `config.test`: the held-out test split is never picked as validation."""
    if config.test is None:
        return candidates
    test = Path(config.test).expanduser().resolve()
    return {k: v for k, v in candidates.items() if v.resolve() != test}


def _first(candidates: dict[str, Path], names: tuple[str, ...]) -> Path | None:
    return next((candidates[n] for n in names if n in candidates), None)


# ---------------------------------------------------------------------------------------------------- image folders


def _image_split_dirs(config: DataConfig) -> tuple[Path, Path | None]:
    """Train and validation folders: explicit `train=`/`validation=`, `root/train` + `root/val|validation|test`, or
    a flat `root/<class>/` layout (validation held out by the pipeline)."""
    validation = _existing(config.validation, "validation") if config.validation else None
    if config.train is not None:
        return _existing(config.train, "train"), validation
    root = _existing(config.source, "source")
    if not root.is_dir():
        raise DataError(f"source={config.source!r} is a file; format='imagefolder' needs a folder of class folders.")
    subdirs = {d.name.lower(): d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")}
    train = _first(subdirs, TRAIN_SPLIT_NAMES)
    if train is None:
        if subdirs and set(subdirs) <= set(VALIDATION_SPLIT_NAMES):
            raise DataError(
                f"source={config.source!r} holds split folders {sorted(subdirs)} but no train/ folder; add one or "
                "pass train=... explicitly."
            )
        return root, validation
    return train, validation or _first(_not_test(subdirs, config), VALIDATION_SPLIT_NAMES)


def _scan_split(folder: Path, split: str) -> tuple[dict[str, list[Path]], list[str]]:
    classes, stray = scan_class_folders(folder)
    if not classes:
        raise DataError(
            f"{split} folder {str(folder)!r} has no class sub-folders; the image folder layout is "
            f"{folder}/<class name>/<image file>."
        )
    warnings = []
    if stray:
        warnings.append(f"{len(stray)} image file(s) directly in {folder} are ignored (not in a class folder).")
    return classes, warnings


@register_source("imagefolder")
def load_imagefolder(config: DataConfig, arrays: Any = None) -> SourceData:
    """Class folders (`<split>/<class>/<image>`), each file decoded once to drop corrupt ones (`verify_images`)."""
    train_dir, val_dir = _image_split_dirs(config)
    train_classes, warnings = _scan_split(train_dir, "train")
    label_names = sorted(train_classes)
    if config.label_names is not None:  # a fixed order, e.g. to match a pretrained head
        if sorted(config.label_names) != label_names:
            raise DataError(
                f"label_names={config.label_names} must list exactly the class folders of {train_dir}: {label_names}."
            )
        label_names = list(config.label_names)
    empty = [name for name, files in train_classes.items() if not files]
    if empty:
        raise DataError(
            f"class folder(s) {empty} in {train_dir} hold no image files (suffixes .jpg, .png, ...); every class "
            "needs training images. Add images or remove the folder(s)."
        )
    splits = {"train": train_classes}
    if val_dir is not None:
        splits["validation"], val_warnings = _scan_split(val_dir, "validation")
        warnings += val_warnings
        unknown = sorted(set(splits["validation"]) - set(train_classes))
        if unknown:
            raise DataError(
                f"validation class folder(s) {unknown} in {val_dir} have no counterpart among the training classes "
                f"{label_names} in {train_dir}; every validation class needs training images. Rename or remove them."
            )
    label_ids = {name: i for i, name in enumerate(label_names)}
    rows = [
        (split, path, label_ids[name])
        for split, classes in splits.items()
        for name, files in classes.items()
        for path in files
    ]
    reasons = check_images([path for _, path, _ in rows]) if config.verify_images else [None] * len(rows)
    skipped: list[SkippedItem] = []
    kept: dict[str, tuple[list[str], list[int]]] = {split: ([], []) for split in splits}
    for (split, path, label), reason in zip(rows, reasons):
        if reason:
            skipped.append(SkippedItem(split, str(path), reason))
        else:
            kept[split][0].append(str(path))
            kept[split][1].append(label)
    built = {
        split: image_dataset(paths, np.array(ids, dtype=np.int64), label_names) for split, (paths, ids) in kept.items()
    }
    root = Path(config.source).expanduser().resolve() if config.source and config.train is None else train_dir
    return SourceData(
        train=built["train"],
        validation=built.get("validation"),
        label_names=label_names,
        modality="image",
        kind="imagefolder",
        name=config.name or _display_name(root),
        path=str(root),
        validation_source=f"{val_dir.name}/ folder" if val_dir is not None else "",
        skipped=skipped,
        warnings=warnings,
    )


# ------------------------------------------------------------------------------------------------------ table files


def _table_files(config: DataConfig, format: str) -> tuple[Path, Path | None]:
    """Train and validation files: explicit `train=`/`validation=`, a single file, or split files in a folder."""
    validation = _existing(config.validation, "validation") if config.validation else None
    if config.train is not None:
        return _existing(config.train, "train"), validation
    source = _existing(config.source, "source")
    if source.is_file():
        return source, validation
    files = {
        f.stem.lower(): f
        for f in sorted(source.iterdir())
        if f.is_file() and TABLE_SUFFIXES.get(f.suffix.lower()) == format
    }
    train = _first(files, TRAIN_SPLIT_NAMES) or (next(iter(files.values())) if len(files) == 1 else None)
    if train is None:
        raise DataError(
            f"source={config.source!r} has no train file among {[f.name for f in files.values()]}; name it "
            f"train{next(iter(files.values())).suffix if files else '.csv'} or pass train=... explicitly."
        )
    candidates = _not_test({k: v for k, v in files.items() if v != train}, config)
    return train, validation or _first(candidates, VALIDATION_SPLIT_NAMES)


def _load_table(config: DataConfig, format: str) -> SourceData:
    train_file, val_file = _table_files(config, format)
    texts, labels, skipped = clean_text_frame(
        read_table(train_file, format), config.text_columns, config.label_column, "train", train_file.name
    )
    val_texts = val_labels = None
    if val_file is not None:
        val_texts, val_labels, val_skipped = clean_text_frame(
            read_table(val_file, format), config.text_columns, config.label_column, "validation", val_file.name
        )
        skipped += val_skipped
    names, train_ids, val_ids = encode_labels(labels, val_labels, config.label_names)
    path = _existing(config.source, "source") if config.source and config.train is None else train_file
    return SourceData(
        train=text_dataset(texts, train_ids, names),
        validation=None if val_file is None else text_dataset(val_texts, val_ids, names),
        label_names=names,
        modality="text",
        kind=format,
        name=config.name or _display_name(path),
        path=str(path),
        validation_source=val_file.name if val_file is not None else "",
        skipped=skipped,
    )


@register_source("csv")
def load_csv(config: DataConfig, arrays: Any = None) -> SourceData:
    """CSV/TSV text classification files (`text_column`, `label_column`)."""
    return _load_table(config, "csv")


@register_source("json")
def load_json(config: DataConfig, arrays: Any = None) -> SourceData:
    """JSON Lines or JSON (list of records, `{"data": [...]}` or columns) text classification files."""
    return _load_table(config, "json")


@register_source("parquet")
def load_parquet(config: DataConfig, arrays: Any = None) -> SourceData:
    """Parquet text classification files."""
    return _load_table(config, "parquet")


# ----------------------------------------------------------------------------------------------- in-memory arrays

ARRAY_KEYS = {  # canonical part -> accepted names in a dict or .npz
    "x": ("x", "x_train", "X", "X_train", "images", "texts"),
    "y": ("y", "y_train", "labels", "Y", "Y_train"),
    "x_val": ("x_val", "x_validation", "x_test", "X_val", "X_test"),
    "y_val": ("y_val", "y_validation", "y_test", "Y_val", "Y_test"),
    "label_names": ("label_names", "class_names"),
}


def _array_parts(arrays: Any, where: str) -> dict[str, Any]:
    """`(x, y)`, `(x, y, x_val, y_val)` or a mapping with the `ARRAY_KEYS` names -> canonical parts."""
    if isinstance(arrays, (tuple, list)) and len(arrays) in (2, 4):
        return dict(zip(("x", "y", "x_val", "y_val"), arrays))
    if isinstance(arrays, Mapping) or hasattr(arrays, "files"):  # np.load(...) of an .npz
        keys = list(arrays.files if hasattr(arrays, "files") else arrays.keys())
        parts = {part: next((arrays[k] for k in names if k in keys), None) for part, names in ARRAY_KEYS.items()}
        if parts["x"] is None or parts["y"] is None:
            raise DataError(
                f"{where} has keys {keys}; it needs images/texts under one of {list(ARRAY_KEYS['x'])} and labels "
                f"under one of {list(ARRAY_KEYS['y'])} (validation optional: {list(ARRAY_KEYS['x_val'])})."
            )
        return parts
    raise DataError(
        f"arrays={type(arrays).__name__} is not supported; pass (x, y), (x, y, x_val, y_val) or a dict with keys "
        "x, y[, x_val, y_val, label_names]."
    )


def _is_text(x: Any) -> bool:
    if isinstance(x, np.ndarray):
        return x.dtype.kind in "US" or (x.dtype.kind == "O" and x.size > 0 and isinstance(x.flat[0], str))
    return isinstance(next(iter(x), None), str)


def _array_split(
    x: Any, y: Any, split: str, text: bool, x_key: str, y_key: str
) -> tuple[Any, np.ndarray, list[SkippedItem]]:
    """Check lengths, drop rows with missing labels (and empty texts): returns rows, labels and what was dropped."""
    if len(x) != len(y):
        raise DataError(f"{x_key} has {len(x)} rows but {y_key} has {len(y)} labels; they must have the same length.")
    if len(x) == 0:
        raise DataError(f"{x_key} is empty; pass at least one example per class.")
    if text:
        frame = pd.DataFrame({"text": pd.Series(list(x), dtype=object), "label": pd.Series(list(y))})
        texts, labels, skipped = clean_text_frame(frame, ["text"], "label", split, x_key)
        return texts, labels.to_numpy(), skipped
    missing = missing_labels(y)
    rows = encode_image_arrays(x, x_key)
    skipped = [SkippedItem(split, f"{x_key} row {i}", "missing label") for i in np.flatnonzero(missing)]
    return [r for r, m in zip(rows, missing) if not m], np.asarray(y, dtype=object)[~missing], skipped


def dataset_from_arrays(
    parts: dict[str, Any], config: DataConfig, kind: str = "arrays", name: str = "arrays", path: str | None = None
) -> SourceData:
    """Standardised splits from in-memory images (`uint8` or floats in [0, 1]) or texts, plus labels."""
    x, y, x_val, y_val = (parts.get(k) for k in ("x", "y", "x_val", "y_val"))
    if (x_val is None) != (y_val is None):
        raise DataError("x_val and y_val go together: pass both (a validation split) or neither (held-out split).")
    text = _is_text(x)
    rows, labels, skipped = _array_split(x, y, "train", text, "x", "y")
    val_rows = val_labels = None
    if x_val is not None:
        val_rows, val_labels, val_skipped = _array_split(x_val, y_val, "validation", text, "x_val", "y_val")
        skipped += val_skipped
    names = parts.get("label_names")
    names = config.label_names if names is None else [str(n) for n in np.asarray(names).tolist()]
    names, train_ids, val_ids = encode_labels(labels, val_labels, names, key="y")
    build = text_dataset if text else image_dataset
    return SourceData(
        train=build(rows, train_ids, names),
        validation=None if x_val is None else build(val_rows, val_ids, names),
        label_names=names,
        modality="text" if text else "image",
        kind=kind,
        name=config.name or name,
        path=path,
        validation_source="x_val" if x_val is not None else "",
        skipped=skipped,
    )


@register_source("arrays")
def load_arrays(config: DataConfig, arrays: Any = None) -> SourceData:
    """`arrays` passed to `load_data` (tuple or dict), or an `.npz` file named by `source`/`train`."""
    if arrays is not None:
        return dataset_from_arrays(_array_parts(arrays, "arrays"), config)
    file = config.source or config.train
    if file is None:
        raise DataError("format='arrays' needs load_data(config, arrays=(x, y)) or source='<file>.npz'.")
    path = _existing(file, "source" if config.source else "train")
    with np.load(path, allow_pickle=False) as npz:
        parts = _array_parts(npz, str(path))
    return dataset_from_arrays(parts, config, kind="npz", name=path.stem, path=str(path))


@register_source("sklearn_digits")
def load_sklearn_digits(config: DataConfig, arrays: Any = None) -> SourceData:
    """scikit-learn's 1,797 8x8 grayscale digits (pixels 0..16 scaled to 0..255), classes "0".."9"; no download."""
    from sklearn.datasets import load_digits  # heavy: sklearn.datasets (scipy), ~1 s, only this source

    digits = load_digits()
    pixels = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    parts = {"x": pixels, "y": digits.target, "label_names": [str(i) for i in range(10)]}
    return dataset_from_arrays(
        parts, config, kind="sklearn_digits", name="sklearn_digits", path="sklearn.datasets.load_digits"
    )
