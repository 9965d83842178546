"""What the demo page shows under the prediction: the model card's summary and a few training examples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from hftransfer.export.files import EXPORT_FILE
from hftransfer.saved_format import HFTRANSFER_CONFIG
from hftransfer.utils.io import read_json


EXAMPLES = 4


def card_summary(name: str, model: Any) -> str:
    """Markdown: base model, recipe/method, and the card's `model-index` metrics when the folder has a card."""
    folder = Path(name)
    lines = [f"**Model**: `{name}` ({model.modality}, {model.num_labels} labels)"]
    config_file = next((folder / f for f in (HFTRANSFER_CONFIG, EXPORT_FILE) if (folder / f).is_file()), None)
    if config_file is not None:
        config = read_json(config_file)
        backbone = config.get("backbone")
        base = backbone.get("name") if isinstance(backbone, dict) else backbone
        method = config["method"].get("name") if isinstance(config.get("method"), dict) else config.get("method")
        lines.append(f"**Base model**: `{base}` · **recipe/method**: `{method}`"
                     + (" · **runtime**: onnxruntime" if config_file.name == EXPORT_FILE else ""))
    metrics = _card_metrics(folder / "README.md")
    if metrics:
        lines.append("**Metrics**: " + " · ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return "\n\n".join(lines)


def _card_metrics(readme: Path) -> dict[str, float]:
    if not readme.is_file():
        return {}
    from huggingface_hub import metadata_load  # heavy: loaded only when used

    try:
        index = (metadata_load(readme) or {}).get("model-index") or []
        results = index[0]["results"][0]
        split = results.get("dataset", {}).get("split")
        return {f"{m['type']}" + (f" ({split})" if split else ""): float(m["value"]) for m in results["metrics"]
                if m["type"] in ("accuracy", "f1_macro")}
    except (KeyError, IndexError, TypeError, ValueError):
        return {}


def training_examples(name: str, modality: str, count: int = EXAMPLES) -> list[Any]:
    """A few inputs from the run's training data (image paths or texts), when the run's config.yaml is beside the
    model folder and the data is still there; else none."""
    folder = Path(name)
    config = next((p for p in (folder / "config.yaml", folder.parent / "config.yaml") if p.is_file()), None)
    if config is None:
        return []
    data = (yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("data") or {}
    source = Path(str(data.get("train") or data.get("source") or ""))
    if modality == "image" and source.is_dir():
        from hftransfer.data.images import image_files  # heavy: loads datasets

        files = image_files(source)
        step = max(len(files) // count, 1)
        return [str(f) for f in files[::step][:count]]
    if modality == "text" and source.is_file() and source.suffix.lower() in (".csv", ".tsv", ".json", ".jsonl"):
        from hftransfer.data.tables import TABLE_SUFFIXES, read_table  # heavy: loads datasets

        frame = read_table(source, TABLE_SUFFIXES[source.suffix.lower()])
        column = data.get("text_column") or "text"
        if isinstance(column, str) and column in frame.columns:
            return [str(t) for t in frame[column].dropna().head(count).tolist()]
    return []
