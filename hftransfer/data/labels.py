"""Label maps: raw label values (strings, ints, hub class ids) -> contiguous ids and their names."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .errors import DataError


def missing_labels(values: Any) -> np.ndarray:
    """Boolean mask of missing labels: None/NaN and empty or blank strings."""
    series = values if isinstance(values, pd.Series) else pd.Series(np.asarray(values, dtype=object))
    missing = np.array(series.isna(), dtype=bool)
    if series.dtype == object or pd.api.types.is_string_dtype(series.dtype):
        missing |= series.map(lambda v: isinstance(v, str) and not v.strip()).to_numpy(dtype=bool)
    return missing


def normalise_labels(values: Any, key: str = "label_column") -> np.ndarray:
    """Labels as an int64 array when every value is an integer (5, 5.0, "5" parsed by pandas), else as strings."""
    array = np.asarray(values)
    kind = pd.api.types.infer_dtype(array, skipna=False) if array.dtype.kind == "O" else array.dtype.kind
    if kind in ("i", "u", "integer"):
        return array.astype(np.int64)
    if kind in ("f", "floating", "mixed-integer-float"):
        floats = array.astype(np.float64)
        if np.all(np.isfinite(floats)) and np.all(floats == np.round(floats)):
            return floats.astype(np.int64)
        example = floats[~np.isfinite(floats) | (floats != np.round(floats))][0]
        raise DataError(
            f"{key} holds non-integer numbers (e.g. {example}); classification needs class names or integer ids. "
            f"Point {key}=... at a column of classes."
        )
    return array.astype(str)


def encode_labels(
    train: Any,
    validation: Any | None = None,
    names: Sequence[str] | None = None,
    key: str = "label_column",
) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    """Map raw labels of both splits to ids of one shared label list.

    Without `names` the classes are the sorted unique train values (numeric order for integers, named `str(int)`);
    with `names`, integers must be ids in `range(len(names))` and strings must be among the names. A validation label
    with no training class is an error that names it.
    """
    if names is not None:
        names = [str(n) for n in names]
        train_ids = _ids_from_names(normalise_labels(train, key), names, "train")
        val_ids = (
            None if validation is None else _ids_from_names(normalise_labels(validation, key), names, "validation")
        )
        return names, train_ids, val_ids
    train_values = normalise_labels(train, key)
    if len(train_values) == 0:
        raise DataError("the train split has no labelled rows; check the data source and label_column.")
    unique, train_ids = np.unique(train_values, return_inverse=True)
    names = [str(u) for u in unique.tolist()]
    val_ids = None
    if validation is not None:
        val_values = normalise_labels(validation, key).astype(str)
        val_ids, unknown = _lookup(val_values, names)
        if unknown:
            raise DataError(
                f"validation label(s) {unknown[:5]} do not occur in the training labels {names[:20]}; every "
                "validation class needs training examples. Fix those labels or add training rows for them."
            )
    return names, train_ids.astype(np.int64), val_ids


def _ids_from_names(values: np.ndarray, names: list[str], split: str) -> np.ndarray:
    if values.dtype.kind == "i":
        bad = values[(values < 0) | (values >= len(names))]
        if len(bad):
            raise DataError(
                f"{split} label id {int(bad[0])} is out of range for {len(names)} label_names {names[:20]}; "
                "integer labels must be ids 0..K-1 into label_names (fix label_names or the labels)."
            )
        return values
    ids, unknown = _lookup(values, names)
    if unknown:
        raise DataError(
            f"{split} label(s) {unknown[:5]} are not among label_names {names[:20]}; add them or fix the data."
        )
    return ids


def _lookup(values: np.ndarray, names: list[str]) -> tuple[np.ndarray, list[str]]:
    """Vectorised name -> id lookup; returns ids and the unknown values (only unique values go through Python)."""
    index = {name: i for i, name in enumerate(names)}
    unique, inverse = np.unique(values, return_inverse=True)
    mapped = np.array([index.get(u, -1) for u in unique.tolist()], dtype=np.int64)
    unknown = [u for u, m in zip(unique.tolist(), mapped) if m < 0]
    return mapped[inverse].reshape(-1), unknown
