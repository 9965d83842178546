"""Hub datasets: `datasets.load_dataset(id)` with a fast, clear failure when the hub cannot be reached."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import datasets
import numpy as np
import pandas as pd
from huggingface_hub import constants

from .config import DataConfig
from .errors import DataError
from .images import image_features
from .labels import encode_labels, missing_labels
from .registry import VALIDATION_SPLIT_NAMES, SourceData, register_source
from .report import SkippedItem
from .tables import check_columns, clean_text_frame, text_dataset


def hub_reachable(endpoint: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub endpoint opens within `timeout` seconds (DNS included).

    Without this probe an unreachable hub costs ~25 s of retries per `load_dataset` call before failing.
    """
    url = urlparse(endpoint)
    address = (url.hostname or "", url.port or (443 if url.scheme == "https" else 80))
    result: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection(address, timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=connect, daemon=True)  # getaddrinfo has no timeout of its own
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _offline_hint() -> str:
    return (
        f"HF_HUB_OFFLINE={'1' if datasets.config.HF_HUB_OFFLINE else 'unset'}; with HF_HUB_OFFLINE=1 (set before "
        f"Python starts) only datasets already in the cache {datasets.config.HF_DATASETS_CACHE} load. Check the id, "
        "or pass a local folder/file as source=... (format='imagefolder', 'csv', 'json', ...)."
    )


def _load(config: DataConfig) -> datasets.DatasetDict:
    dataset_id = config.source
    subset = f" (hub_subset={config.hub_subset!r})" if config.hub_subset else ""
    if not datasets.config.HF_HUB_OFFLINE and not Path(str(dataset_id)).exists():  # local dirs need no hub
        if not hub_reachable(constants.ENDPOINT):
            raise DataError(
                f"cannot load hub dataset {dataset_id!r}{subset}: {constants.ENDPOINT} is unreachable. "
                + _offline_hint()
            )
    try:
        loaded = datasets.load_dataset(dataset_id, config.hub_subset)
    # ConnectionError and DatasetNotFoundError are OSErrors; a wrong hub_subset is a ValueError
    except (OSError, ValueError, datasets.exceptions.DatasetsError) as err:
        hint = _offline_hint()
        if isinstance(err, datasets.exceptions.DatasetNotFoundError):
            hint = ("The hub answers 'not found' also for a private or gated dataset you are not authenticated for: "
                    "set HF_TOKEN or run `hf auth login` (and request access on a gated dataset's page).")
        raise DataError(f"could not load hub dataset {dataset_id!r}{subset}: {err}. {hint}") from err
    if not isinstance(loaded, datasets.DatasetDict):
        raise DataError(f"hub dataset {dataset_id!r} did not load as splits (got {type(loaded).__name__}).")
    return loaded


def _pick_splits(loaded: datasets.DatasetDict, config: DataConfig) -> dict[str, str]:
    """`{"train": name[, "validation": name]}`: the configured splits, else the first of validation/val/.../test."""
    available = list(loaded)
    for key, name in (("train_split", config.train_split), ("validation_split_name", config.validation_split_name)):
        if name is not None and name not in loaded:
            raise DataError(
                f"{key}={name!r} is not a split of {config.source!r}; available splits: {available}. Set {key}=..."
            )
    found = config.validation_split_name or next(
        (s for s in VALIDATION_SPLIT_NAMES if s in loaded and s not in (config.train_split, config.test)), None
    )
    return {"train": config.train_split, **({"validation": found} if found else {})}


def _input_columns(features: datasets.Features, config: DataConfig, where: str) -> tuple[str, list[str]]:
    """`("image", [image_column])` or `("text", text_columns)`, whichever the dataset has."""
    if config.image_column in features:
        if not isinstance(features[config.image_column], datasets.Image):
            raise DataError(
                f"image_column={config.image_column!r} of {where} is {features[config.image_column]}, not an Image; "
                "set image_column=... to the image column."
            )
        return "image", [config.image_column]
    if all(c in features for c in config.text_columns):
        return "text", config.text_columns
    raise DataError(
        f"{where} has neither image_column={config.image_column!r} nor text_column={config.text_column!r}; "
        f"columns: {list(features)}. Set image_column=... or text_column=..."
    )


def _frame(split: datasets.Dataset, columns: list[str], label: str) -> pd.DataFrame:
    """Columns as pandas (vectorised); a `ClassLabel` -1 ("no label", e.g. GLUE test) becomes missing."""
    frame = split.select_columns([*columns, label]).to_pandas()
    if isinstance(split.features[label], datasets.ClassLabel):
        frame[label] = frame[label].where(frame[label] >= 0)
    return frame


@register_source("hub")
def load_hub(config: DataConfig, arrays: Any = None) -> SourceData:
    """A hub dataset id: splits `train_split` + `validation_split_name` (or validation/val/valid/dev/test)."""
    loaded = _load(config)
    split_names = _pick_splits(loaded, config)
    where = f"hub dataset {config.source!r}"
    features = loaded[split_names["train"]].features
    modality, inputs = _input_columns(features, config, where)
    label = config.label_column
    check_columns(list(features), {label: "label_column"}, where)
    names = features[label].names if isinstance(features[label], datasets.ClassLabel) else config.label_names
    text_inputs = inputs if modality == "text" else []  # images stay in Arrow; only their labels go to pandas
    frames = {split: _frame(loaded[name], text_inputs, label) for split, name in split_names.items()}
    warnings = []
    if "validation" in frames and config.validation_split_name is None and frames["validation"][label].isna().all():
        warnings.append(f"split {split_names['validation']!r} of {where} has no labels; holding out part of train.")
        del frames["validation"], split_names["validation"]

    rows: dict[str, Any] = {}
    labels: dict[str, Any] = {}
    skipped: list[SkippedItem] = []
    for split, frame in frames.items():
        if modality == "text":
            rows[split], labels[split], dropped = clean_text_frame(frame, inputs, label, split, split_names[split])
        else:
            missing = missing_labels(frame[label])
            rows[split], labels[split] = np.flatnonzero(~missing), frame[label][~missing]
            dropped = [
                SkippedItem(split, f"{split_names[split]} row {i}", f"missing {label}")
                for i in np.flatnonzero(missing)
            ]
        skipped += dropped
    names, train_ids, val_ids = encode_labels(labels["train"], labels.get("validation"), names)
    ids = {"train": train_ids, "validation": val_ids}
    built = {}
    for split in frames:
        if modality == "text":
            built[split] = text_dataset(rows[split], ids[split], names)
        else:
            images = loaded[split_names[split]].select_columns(inputs)
            images = images.select(rows[split]) if len(rows[split]) < len(images) else images
            images = images.rename_column(inputs[0], "image") if inputs[0] != "image" else images
            built[split] = images.add_column("label", ids[split].tolist()).cast(image_features(names))
    return SourceData(
        train=built["train"],
        validation=built.get("validation"),
        label_names=names,
        modality=modality,
        kind="hub",
        name=config.name or str(config.source),
        path=str(config.source),
        validation_source=f"{split_names['validation']!r} split" if "validation" in built else "",
        skipped=skipped,
        warnings=warnings,
    )
