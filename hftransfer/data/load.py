"""`load_data` / `from_arrays`: user data -> labelled train and validation `datasets.Dataset` splits."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np

from . import hub, sources  # noqa: F401  (importing them registers their source loaders)
from .config import DataConfig
from .errors import DataError, DataWarning
from .labelled_split import LabelledSplit, load_labelled_split, remap_labels
from .registry import get_loader, resolve_format
from .report import DataReport, DatasetDescription
from .split import stratified_split, stratified_subsample
from .validate import check_bad_data, check_splits


@dataclass
class LoadedData:
    """Train and validation splits with one shared label map.

    Columns: image data has `image` (`datasets.Image`, decoded lazily to PIL; the engine converts to RGB) and
    `label` (`datasets.ClassLabel` named `label_names`); text data has `text` (str, plus `text_pair` for sentence
    pairs) and `label`. Both splits carry the same `ClassLabel`.

    ```py
    >>> data = load_data(DataConfig(source="sklearn_digits"))
    >>> data.train.features["label"].names == data.label_names
    True
    ```
    """

    train: datasets.Dataset
    validation: datasets.Dataset
    label_names: list[str]
    modality: str  # "image" | "text"
    report: DataReport
    description: DatasetDescription
    test: datasets.Dataset | None = None  # held-out split (`DataConfig.test`), scored once after training


    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.label_names))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.label_names)}

    def as_dataset_dict(self) -> datasets.DatasetDict:
        splits = {"train": self.train, "validation": self.validation}
        return datasets.DatasetDict({**splits, **({"test": self.test} if self.test is not None else {})})


def _labels(split: datasets.Dataset) -> np.ndarray:
    return split.with_format("arrow")["label"].to_numpy().astype(np.int64)  # one Arrow read, indices respected


def _subsample(split: datasets.Dataset, cap: int | None, seed: int) -> datasets.Dataset:
    if cap is None or cap >= len(split):
        return split
    return split.select(stratified_subsample(_labels(split), cap, seed))


def load_data(config: DataConfig, arrays: tuple | dict | None = None,
              test_arrays: tuple[Any, Any] | None = None) -> LoadedData:
    """Read `config.source` (or in-memory `arrays`) into cleaned, stratified train/validation splits, and the
    held-out test split (`config.test`, or in-memory `test_arrays` = `(x_test, y_test)` with in-memory `arrays`).

    Steps: pick the loader (`config.format` or inferred), drop bad files/rows per `on_bad_data`, hold out a stratified
    `validation_split` when the source has no validation split, subsample to `max_train_samples` /
    `max_eval_samples`, then check every class has training rows. Warnings are `DataWarning`s and are also kept in
    `report.warnings`.
    """
    if test_arrays is not None and (arrays is None or config.test is not None):
        raise DataError("test arrays go with in-memory training arrays and without data.test; pass one test split.")
    source = get_loader(resolve_format(config, arrays))(config, arrays)
    messages = list(source.warnings)
    skipped_message = check_bad_data(source.skipped, config.on_bad_data)
    messages += [skipped_message] if skipped_message else []

    train, validation, validation_source = source.train, source.validation, source.validation_source
    if validation is None:
        train_idx, val_idx = stratified_split(_labels(train), config.validation_split, config.seed)
        train, validation = train.select(train_idx), train.select(val_idx)
        validation_source = f"stratified {config.validation_split:.0%} of train (seed {config.seed})"
    num_classes = len(source.label_names)
    if config.max_train_samples is not None and config.max_train_samples < num_classes:
        raise DataError(
            f"max_train_samples={config.max_train_samples} is below the number of classes ({num_classes}); "
            f"use at least {num_classes} so every class keeps a training sample."
        )
    train = _subsample(train, config.max_train_samples, config.seed)
    if config.max_eval_samples is not None and config.max_eval_samples < len(validation):
        validation_source += f", stratified subsample of {config.max_eval_samples} (seed {config.seed})"
        validation = _subsample(validation, config.max_eval_samples, config.seed)

    train_labels, val_labels = _labels(train), _labels(validation)
    messages += check_splits(train_labels, val_labels, source.label_names, validation_source)
    for message in messages:
        warnings.warn(message, DataWarning, stacklevel=2)

    counts = {
        split: dict(zip(source.label_names, np.bincount(labels, minlength=num_classes).tolist()))
        for split, labels in (("train", train_labels), ("validation", val_labels))
    }
    num_rows = {"train": len(train), "validation": len(validation)}
    if test_arrays is not None:
        test = _array_test_split(test_arrays, config, list(source.label_names), source.modality)
    else:
        test = _test_split(config, list(source.label_names), source.modality, arrays)
    if test is not None:
        num_rows["test"] = len(test)
        test_counts = np.bincount(_labels(test.dataset), minlength=num_classes).tolist()
        counts["test"] = dict(zip(source.label_names, test_counts))
        source.skipped = source.skipped + test.skipped
    return LoadedData(
        train=train,
        validation=validation,
        label_names=list(source.label_names),
        modality=source.modality,
        report=DataReport(num_rows=num_rows, class_counts=counts, skipped=source.skipped, warnings=messages),
        description=DatasetDescription(
            name=source.name,
            kind=source.kind,
            path=source.path,
            num_samples=dict(num_rows),
            label_names=list(source.label_names),
            modality=source.modality,
            validation_source=validation_source,
        ),
        test=None if test is None else test.dataset,
    )


def _test_split(config: DataConfig, label_names: list[str], modality: str, arrays: Any) -> LabelledSplit | None:
    """`config.test` read against the training labels: a hub split name for hub data, else a folder or file."""
    if config.test is None:
        return None
    fmt = resolve_format(config, arrays)
    if fmt == "hub":
        test = load_labelled_split(config, label_names, split=config.test, key="data.test")
    else:
        local = config.format if fmt in ("imagefolder", "csv", "json", "parquet") else "auto"
        test_config = dataclasses.replace(config, source=config.test, train=None, validation=None, format=local)
        test = load_labelled_split(test_config, label_names, key="data.test")
    if test.modality != modality:
        raise DataError(f"data.test={config.test!r} is {test.modality} data but train is {modality}; match them.")
    if len(test) == 0:
        raise DataError(f"data.test={config.test!r} has no usable rows (all skipped); fix it or drop data.test.")
    return test


def _array_test_split(test_arrays: tuple[Any, Any], config: DataConfig, label_names: list[str],
                      modality: str) -> LabelledSplit:
    """In-memory `(x_test, y_test)` read like the training arrays; labels matched to the training classes by name."""
    x_test, y_test = test_arrays
    if x_test is None or y_test is None:
        raise DataError("x_test and y_test go together: pass both (a held-out test split) or neither.")
    source = sources.dataset_from_arrays({"x": x_test, "y": y_test}, config, name="x_test")
    if source.modality != modality:
        raise DataError(f"x_test is {source.modality} data but x is {modality}; match them.")
    skipped = [dataclasses.replace(item, split="test") for item in source.skipped]
    if skipped and config.on_bad_data == "error":
        raise DataError(f"x_test: bad item {skipped[0].item!r}: {skipped[0].reason}; set on_bad_data='skip'.")
    if len(source.train) == 0:
        raise DataError("x_test has no usable rows (all skipped); fix it or leave the test split out.")
    dataset = remap_labels(source.train, source.label_names, label_names, "y_test", "the test arrays")
    return LabelledSplit(dataset, modality, "arrays", source.name, "test", None, skipped)


def from_arrays(
    x: Any,
    y: Any,
    label_names: Sequence[str] | None = None,
    x_val: Any | None = None,
    y_val: Any | None = None,
    *,
    x_test: Any | None = None,
    y_test: Any | None = None,
    validation_split: float = 0.15,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    on_bad_data: str = "skip",
    seed: int = 42,
    name: str | None = None,
) -> LoadedData:
    """In-memory data: images as numpy `(N, H, W)` / `(N, H, W, C)` `uint8` or floats in [0, 1], or a list of
    strings; `y` integer ids (into `label_names` when given) or class names. `x_val`/`y_val`: a validation split
    (model selection); `x_test`/`y_test`: a held-out test split, scored once on the best model after training.

    ```py
    >>> import numpy as np
    >>> data = from_arrays(np.zeros((20, 8, 8), np.uint8), [0, 1] * 10, label_names=["off", "on"])
    >>> data.modality, len(data.train) + len(data.validation)
    ('image', 20)
    ```
    """
    config = DataConfig(
        format="arrays",
        label_names=None if label_names is None else [str(n) for n in label_names],
        validation_split=validation_split,
        max_train_samples=max_train_samples,
        max_eval_samples=max_eval_samples,
        on_bad_data=on_bad_data,  # type: ignore[arg-type]
        seed=seed,
        name=name,
    )
    test = None if x_test is None and y_test is None else (x_test, y_test)
    return load_data(config, arrays={"x": x, "y": y, "x_val": x_val, "y_val": y_val}, test_arrays=test)
