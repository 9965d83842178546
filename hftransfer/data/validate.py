"""Checks on the final splits and on dropped data: errors for unusable data, warnings for thin data."""

from __future__ import annotations

import numpy as np

from .errors import DataError
from .report import SkippedItem, format_skipped


def check_bad_data(skipped: list[SkippedItem], policy: str) -> str | None:
    """Raise under `on_bad_data="error"`; under "skip" return the one warning that sums up what was dropped."""
    if not skipped:
        return None
    first = skipped[0]
    if policy == "error":
        raise DataError(
            f"bad {first.split} data: {first.item!r}: {first.reason} ({len(skipped)} bad item(s) in all). Fix or "
            "remove it, or set on_bad_data='skip' to drop bad items with a warning."
        )
    return (
        f"skipped {len(skipped)} bad item(s): {format_skipped(skipped)}. The full list is in "
        "LoadedData.report.skipped; set on_bad_data='error' to stop instead."
    )


def check_splits(
    train_labels: np.ndarray, val_labels: np.ndarray, label_names: list[str], validation_source: str
) -> list[str]:
    """Raise for fewer than two classes, a class without training rows or an empty validation split; return
    warnings for single-sample classes and classes missing from validation."""
    if len(label_names) < 2:
        raise DataError(f"classification needs at least two classes; the data has {label_names}.")
    train_counts = np.bincount(train_labels, minlength=len(label_names))
    val_counts = np.bincount(val_labels, minlength=len(label_names))
    absent = [name for name, n in zip(label_names, train_counts) if n == 0]
    if absent:
        raise DataError(
            f"class(es) {absent[:10]} have no training samples; every class needs some. Add data for them, or drop "
            "the class (remove its folder / label name)."
        )
    if len(val_labels) == 0:
        raise DataError(
            f"the validation split ({validation_source or 'held out of train'}) is empty; provide validation data "
            "(validation=... / a val split) or more training rows to hold out."
        )
    warnings = []
    single = [name for name, n in zip(label_names, train_counts) if n == 1]
    if single:
        warnings.append(f"class(es) {single[:10]} have a single training sample; expect poor accuracy on them.")
    unseen = [name for name, n in zip(label_names, val_counts) if n == 0]
    if unseen:
        warnings.append(f"class(es) {unseen[:10]} have no validation samples; their accuracy is not measured.")
    return warnings
