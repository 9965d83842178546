"""Tabular text inputs: read CSV/TSV/JSON(L)/Parquet into pandas, drop bad rows, build `text` + `label` rows."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import datasets
import numpy as np
import pandas as pd

from .errors import DataError
from .labels import missing_labels
from .report import SkippedItem


TABLE_SUFFIXES = {
    ".csv": "csv",
    ".tsv": "csv",
    ".json": "json",
    ".jsonl": "json",
    ".ndjson": "json",
    ".parquet": "parquet",
}


def _read_csv(path: Path) -> pd.DataFrame:
    # Only empty fields are missing: the default NA list would turn texts such as "NA", "null" or "None" into NaN.
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    return pd.read_csv(path, sep=sep, keep_default_na=False, na_values=[""])


def _read_json(path: Path) -> pd.DataFrame:
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return pd.read_json(path, lines=True, dtype=False, convert_dates=False)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        if "Extra data" not in str(err):
            raise
        return pd.read_json(path, lines=True, dtype=False, convert_dates=False)  # JSON Lines saved as .json
    if isinstance(data, dict):  # {"data": [records]} or {"text": [...], "label": [...]}
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) == 1 and all(isinstance(r, dict) for r in lists[0]):
            data = lists[0]
        elif lists and len(lists) == len(data):
            return pd.DataFrame(data)
    if isinstance(data, list) and all(isinstance(r, dict) for r in data):
        return pd.DataFrame.from_records(data)
    raise DataError(
        f"{path} is JSON but not a table; use JSON Lines (one object per line), a list of objects, "
        '{"data": [objects]} or {"column": [values], ...}.'
    )


TABLE_READERS: dict[str, Callable[[Path], pd.DataFrame]] = {
    "csv": _read_csv,
    "json": _read_json,
    "parquet": pd.read_parquet,
}


def read_table(path: Path, format: str) -> pd.DataFrame:
    """One table file as a DataFrame; read errors name the file and the format tried."""
    try:
        return TABLE_READERS[format](path)
    except DataError:
        raise
    except (ValueError, OSError, UnicodeDecodeError) as err:  # pandas ParserError and JSONDecodeError are ValueErrors
        raise DataError(
            f"could not read {path} as {format}: {err}. Set format=... if the file is another format."
        ) from err


def text_features(label_names: Sequence[str], pair: bool = False) -> datasets.Features:
    """The standard text columns: `text` (and `text_pair`) as strings, `label` as `ClassLabel`."""
    columns = {"text": datasets.Value("string")}
    if pair:
        columns["text_pair"] = datasets.Value("string")
    return datasets.Features({**columns, "label": datasets.ClassLabel(names=list(label_names))})


def text_dataset(texts: Sequence[list[str]], label_ids: np.ndarray, label_names: Sequence[str]) -> datasets.Dataset:
    """A Dataset from one text list (or two, for sentence pairs) and label ids."""
    names = ["text", "text_pair"][: len(texts)]
    return datasets.Dataset.from_dict(
        {**dict(zip(names, texts)), "label": np.asarray(label_ids, dtype=np.int64)},
        features=text_features(label_names, pair=len(texts) == 2),
    )


def check_columns(available: Sequence[str], required: dict[str, str], where: str) -> None:
    """Raise if a configured column is absent; `required` maps column -> the DataConfig key that named it."""
    for column, key in required.items():
        if column not in available:
            raise DataError(
                f"{key}={column!r} is not a column of {where}; available columns: {[str(c) for c in available]}. "
                f"Set {key}=... in DataConfig."
            )


def clean_text_frame(
    frame: pd.DataFrame, text_columns: Sequence[str], label_column: str, split: str, where: str
) -> tuple[list[list[str]], pd.Series, list[SkippedItem]]:
    """Drop rows with empty/missing text or a missing label (vectorised); return texts, labels and the dropped rows."""
    required = {**dict.fromkeys(text_columns, "text_column"), label_column: "label_column"}
    check_columns(list(frame.columns), required, where)
    reasons = pd.Series("", index=frame.index, dtype=object)
    for column in text_columns:
        values = frame[column]
        blank = values.isna() | values.astype(str).str.strip().eq("")
        reasons = reasons.mask(blank & reasons.eq(""), f"empty {column}")
    reasons = reasons.mask(missing_labels(frame[label_column]) & reasons.eq(""), f"missing {label_column}")
    bad = reasons.ne("").to_numpy()
    skipped = [SkippedItem(split, f"{where} row {i}", reason) for i, reason in zip(np.flatnonzero(bad), reasons[bad])]
    kept = frame.loc[~bad]
    texts = [kept[column].astype(str).tolist() for column in text_columns]
    return texts, kept[label_column], skipped
