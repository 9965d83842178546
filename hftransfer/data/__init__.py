"""The data layer: user data (image folders, CSV/JSON, hub ids, arrays, sklearn digits) -> labelled splits."""

from __future__ import annotations

from .config import FORMATS, DataConfig
from .errors import DataError, DataWarning
from .labelled_split import LabelledSplit, load_labelled_split
from .load import LoadedData, from_arrays, load_data
from .registry import SOURCE_LOADERS, SourceData, register_source, resolve_format
from .report import DataReport, DatasetDescription, SkippedItem, build_data_report
from .split import stratified_split, stratified_subsample


__all__ = [
    "FORMATS",
    "SOURCE_LOADERS",
    "DataConfig",
    "DataError",
    "DataReport",
    "DataWarning",
    "DatasetDescription",
    "LabelledSplit",
    "LoadedData",
    "SkippedItem",
    "SourceData",
    "build_data_report",
    "from_arrays",
    "load_data",
    "load_labelled_split",
    "register_source",
    "resolve_format",
    "stratified_split",
    "stratified_subsample",
]
