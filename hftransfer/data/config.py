"""`DataConfig`: where the data is and how to turn it into train/validation splits."""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from .errors import DataError


FORMATS = ("auto", "imagefolder", "csv", "json", "parquet", "hub", "arrays", "sklearn_digits")
BAD_DATA_POLICIES = ("skip", "error")


@dataclass
class DataConfig:
    """Where the data lives and how to split it.

    Args:
        source (`str`, *optional*):
            An image folder, a CSV/TSV/JSON(L)/Parquet file or a folder of split files (`train.csv`, `dev.csv`, ...),
            a `.npz` of arrays, a hub dataset id (`org/name`) or the builtin name `"sklearn_digits"`.
        format (`str`, *optional*, defaults to `"auto"`):
            One of `FORMATS`; `"auto"` decides from `source` (folder, file suffix, builtin name or hub id).
        train / validation (`str`, *optional*):
            Explicit train and validation folder/file; they override split discovery under `source`.
        test (`str`, *optional*):
            A held-out test folder/file (any supported format), or for hub data the name of a split. The best
            checkpoint is evaluated on it once after training; it never influences model selection.
        text_column (`str` or `list[str]`, defaults to `"text"`):
            Text column of CSV/JSON/hub data; two names make sentence pairs (output columns `text`, `text_pair`).
        validation_split (`float`, defaults to 0.15):
            Fraction of train held out (stratified) when the source has no validation split.
        max_train_samples / max_eval_samples (`int`, *optional*):
            Stratified, seed-deterministic subsample of each split.
        on_bad_data (`str`, defaults to `"skip"`):
            `"skip"` drops unreadable images and empty/unlabelled rows with one warning; `"error"` raises on the first.

    ```py
    >>> from hftransfer.data import DataConfig, load_data
    >>> data = load_data(DataConfig(source="sklearn_digits", max_train_samples=200))
    >>> data.label_names[:3], data.modality
    (['0', '1', '2'], 'image')
    ```
    """

    source: str | None = field(default=None, metadata={"help": "Folder, file, hub id or builtin name."})
    format: Literal["auto", "imagefolder", "csv", "json", "parquet", "hub", "arrays", "sklearn_digits"] = field(
        default="auto", metadata={"help": "How to read `source`; 'auto' infers it."}
    )
    train: str | None = field(default=None, metadata={"help": "Explicit train folder/file."})
    validation: str | None = field(default=None, metadata={"help": "Explicit validation folder/file."})
    test: str | None = field(
        default=None, metadata={"help": "Held-out test folder/file, or the split name of a hub dataset."}
    )
    text_column: str | list[str] = field(default="text", metadata={"help": "Text column (or two for pairs)."})
    label_column: str = field(default="label", metadata={"help": "Label column of tabular/hub data."})
    image_column: str = field(default="image", metadata={"help": "Image column of hub data."})
    label_names: list[str] | None = field(
        default=None, metadata={"help": "Names of integer labels 0..K-1, or the class order of an image folder."}
    )
    validation_split: float = field(default=0.15, metadata={"help": "Held-out fraction when there is no val split."})
    train_split: str = field(default="train", metadata={"help": "Hub split used for training."})
    validation_split_name: str | None = field(
        default=None, metadata={"help": "Hub split used for validation; None tries validation/val/valid/dev/test."}
    )
    hub_subset: str | None = field(default=None, metadata={"help": "Hub dataset configuration, e.g. 'sst2' of glue."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Stratified cap on train rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Stratified cap on validation rows."})
    on_bad_data: Literal["skip", "error"] = field(default="skip", metadata={"help": "'skip' (warn) or 'error'."})
    verify_images: bool = field(
        default=True, metadata={"help": "Decode every image file once at load time to catch corrupt files."}
    )
    seed: int = field(default=42, metadata={"help": "Seed of the stratified split and subsamples."})
    name: str | None = field(default=None, metadata={"help": "Dataset name for model cards; default from source."})

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise DataError(f"format={self.format!r} is not supported; use one of {list(FORMATS)}.")
        if self.on_bad_data not in BAD_DATA_POLICIES:
            raise DataError(f"on_bad_data={self.on_bad_data!r} is not supported; use 'skip' or 'error'.")
        if not 0.0 < float(self.validation_split) < 1.0:
            raise DataError(
                f"validation_split={self.validation_split!r} must be a fraction strictly between 0 and 1 (e.g. 0.15)."
            )
        for key in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1):
                raise DataError(f"{key}={value!r} must be a positive integer or None (no cap).")
        columns = [self.text_column] if isinstance(self.text_column, str) else list(self.text_column)
        if not 1 <= len(columns) <= 2 or not all(isinstance(c, str) and c for c in columns):
            raise DataError(
                f"text_column={self.text_column!r} must be one column name or a list of two (sentence pairs)."
            )
        if self.label_names is not None and len(set(self.label_names)) != len(self.label_names):
            raise DataError(f"label_names={self.label_names!r} has duplicates; give each class one unique name.")
        if self.source is None and self.train is None and self.format not in ("arrays", "sklearn_digits"):
            raise DataError("DataConfig needs source=... (folder, file, hub id or 'sklearn_digits') or train=...")

    @property
    def text_columns(self) -> list[str]:
        """`text_column` as a list (one column, or two for sentence pairs)."""
        return [self.text_column] if isinstance(self.text_column, str) else list(self.text_column)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
