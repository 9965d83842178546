"""The inputs the parity check runs: `--data`, else the run's validation split, else synthetic (with a warning)."""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .errors import ExportError, ExportWarning


RUN_CONFIG = "config.yaml"  # written by `hftransfer train` into output_dir, the parent of output_dir/model


@dataclass
class ParityInputs:
    """Raw inputs (PIL images or texts, plus `pairs` for sentence pairs) and their label ids when known."""

    values: list[Any]
    labels: np.ndarray | None
    source: str  # "data" | "validation" | "synthetic"
    description: str
    pairs: list[str] | None = None


def parity_inputs(model: Any, folder: Path | None, data: Any, num_samples: int, seed: int = 0) -> ParityInputs:
    """`num_samples` stratified rows of `data` (a path or a `DataConfig`), of the validation split recorded beside
    `folder`, or synthetic."""
    if data is not None:
        from hftransfer.data import DataConfig, load_labelled_split  # heavy: loads datasets

        config = data if isinstance(data, DataConfig) else DataConfig(source=str(data))
        split = load_labelled_split(config, _names(model), key="--data")
        if split.modality != model.modality:
            raise ExportError(f"--data {str(config.source)!r} is {split.modality} data but the model is a "
                              f"{model.modality} model; pass data of the model's kind.")
        return _sample(split.dataset, model, num_samples, seed, "data", f"{split.name} ({split.split})")
    recorded, reason = _recorded_validation(model, folder)
    if recorded is not None:
        return _sample(recorded[0], model, num_samples, seed, "validation", recorded[1])
    warnings.warn(f"parity runs on {num_samples} synthetic inputs ({reason}); pass --data with real inputs for a "
                  "check on the data the model will see.", ExportWarning, stacklevel=3)
    return _synthetic(model, num_samples, seed)


def _names(model: Any) -> list[str]:
    return [model.id2label[i] for i in range(model.num_labels)]


def _recorded_validation(model: Any, folder: Path | None) -> tuple[tuple[Any, str] | None, str]:
    if folder is None:
        return None, "an in-memory model has no recorded training data"
    configs = [p for p in (folder / RUN_CONFIG, folder.parent / RUN_CONFIG) if p.is_file()]
    if not configs:
        return None, f"no {RUN_CONFIG} of a training run beside {str(folder)!r}"

    from hftransfer.data import DataConfig, load_data  # heavy: loads datasets

    try:
        options = (yaml.safe_load(configs[0].read_text(encoding="utf-8")) or {}).get("data") or {}
        known = {f.name for f in dataclasses.fields(DataConfig)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the training run already reported its data warnings
            loaded = load_data(DataConfig(**{k: v for k, v in options.items() if k in known}))
    except Exception as err:  # noqa: BLE001  (moved/deleted data, a hub dataset offline, ...: fall back, say why)
        return None, f"the validation split recorded in {configs[0]} could not be read: {type(err).__name__}: {err}"
    if loaded.modality != model.modality or sorted(loaded.label_names) != sorted(_names(model)):
        return None, f"the data recorded in {configs[0]} does not match the model's labels"
    ids = np.array([model.label2id[name] for name in loaded.label_names])
    validation = loaded.validation
    remapped = validation.map(lambda row: {"label_id": int(ids[row["label"]])}, remove_columns=["label"])
    return (remapped.rename_column("label_id", "label"),
            f"{loaded.description.name} validation ({loaded.description.validation_source})"), ""


def _sample(dataset: Any, model: Any, num_samples: int, seed: int, source: str, description: str) -> ParityInputs:
    from hftransfer.data import stratified_subsample  # heavy: loads datasets

    labels = np.asarray(dataset["label"], dtype=np.int64)
    rows = dataset.select(stratified_subsample(labels, num_samples, seed))
    if model.modality == "image":
        values = [image.convert("RGB") for image in rows["image"]]
        pairs = None
    else:
        values = list(rows["text"])
        pairs = list(rows["text_pair"]) if "text_pair" in rows.column_names else None
    return ParityInputs(values, np.asarray(rows["label"], dtype=np.int64), source,
                        f"{description}, {len(values)} rows", pairs)


def _synthetic(model: Any, num_samples: int, seed: int) -> ParityInputs:
    rng = np.random.default_rng(seed)
    if model.modality == "image":
        from PIL import Image  # heavy: loaded only when used

        size = int(model.preprocessor.data_config["input_size"][-1])
        values = [Image.fromarray(rng.integers(0, 256, (size + 16 * (i % 3), size, 3), dtype=np.uint8))
                  for i in range(num_samples)]
        return ParityInputs(values, None, "synthetic", f"{num_samples} random-noise images of varying shapes")
    tokenizer = model.preprocessor.tokenizer
    special = set(tokenizer.all_special_tokens)
    words = [w for w in tokenizer.get_vocab() if w not in special and w.isalpha()] or ["text"]
    values = [" ".join(rng.choice(words, size=int(rng.integers(1, 40)))) for _ in range(num_samples)]
    return ParityInputs(values, None, "synthetic", f"{num_samples} texts of 1-40 random vocabulary words")
