"""What a load produced: per-split counts, skipped items and a description for model cards."""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from PIL import Image

from .images import parallel_map


@dataclass
class SkippedItem:
    """One file or row that was dropped, and why."""

    split: str  # "train" | "validation"
    item: str  # file path, or "<file> row <i>" for tabular data
    reason: str  # e.g. "cannot identify image file", "empty text", "missing label"


@dataclass
class DataReport:
    """Counts of a load: rows and rows per class for each split, skipped items and warnings raised."""

    num_rows: dict[str, int] = field(default_factory=dict)
    class_counts: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> label name -> rows
    skipped: list[SkippedItem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "num_skipped": self.num_skipped}

    def summary(self) -> str:
        lines = [
            f"{split}: {rows} rows ({', '.join(f'{k}={v}' for k, v in self.class_counts.get(split, {}).items())})"
            for split, rows in self.num_rows.items()
        ]
        if self.skipped:
            lines.append(f"skipped: {self.num_skipped} ({format_skipped(self.skipped)})")
        return "\n".join(lines + [f"warning: {w}" for w in self.warnings])


@dataclass
class DatasetDescription:
    """Provenance of the data, for model cards and run logs."""

    name: str  # e.g. "hymenoptera", "sst2", "sklearn_digits", "org/name"
    kind: str  # the source format: "imagefolder", "csv", "hub", ...
    path: str | None  # folder, file or hub id the data came from
    num_samples: dict[str, int] = field(default_factory=dict)  # split -> rows after cleaning and subsampling
    label_names: list[str] = field(default_factory=list)
    modality: str = "image"  # "image" | "text"
    validation_source: str = ""  # e.g. "val/ folder", "dev.csv", "stratified 15% of train (seed 42)"

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "num_classes": self.num_classes}


def format_skipped(skipped: list[SkippedItem], limit: int = 3) -> str:
    """`'a.jpg' (reason), 'b.jpg' (reason), ... and N more` for warnings and errors."""
    shown = ", ".join(f"{s.item!r} ({s.reason})" for s in skipped[:limit])
    return shown + (f", ... and {len(skipped) - limit} more" if len(skipped) > limit else "")


# ------------------------------------------------------------------------------------------- pre-training data report

IMBALANCE_SUGGESTION_RATIO = 3.0  # largest / smallest train class at which the report suggests a correction
DATA_REPORT_FILES = ("data_report.json", "data_report.md")
_TOKEN_SAMPLE = 5000  # texts per split tokenized (untruncated) to measure the share longer than max_length


def _content_hashes(split: Any, modality: str) -> list[str]:
    """A blake2b digest of each row's content: the image file bytes, or the text (and text pair)."""
    if modality == "text":
        pairs = split["text_pair"] if "text_pair" in split.column_names else None
        texts = list(split["text"])
        rows = [f"{t}\x00{p}" for t, p in zip(texts, pairs)] if pairs is not None else texts
        return [hashlib.blake2b(r.encode("utf-8"), digest_size=16).hexdigest() for r in rows]
    raw = split.cast_column("image", datasets.Image(decode=False))["image"]

    def digest(item: dict[str, Any]) -> str:
        data = item.get("bytes")
        if data is None:
            with open(item["path"], "rb") as handle:
                data = handle.read()
        return hashlib.blake2b(data, digest_size=16).hexdigest()

    return parallel_map(digest, list(raw))


def _image_sizes(split: Any) -> list[tuple[int, int]]:
    """(width, height) of each image from its header only (no decoding)."""
    def size(item: dict[str, Any]) -> tuple[int, int]:
        source = io.BytesIO(item["bytes"]) if item.get("bytes") is not None else item["path"]
        with Image.open(source) as image:
            return image.size

    return parallel_map(size, list(split.cast_column("image", datasets.Image(decode=False))["image"]))


def _distribution(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    array = np.asarray(values, dtype=np.float64)
    return {"min": float(array.min()), "median": float(np.median(array)), "p95": float(np.percentile(array, 95)),
            "max": float(array.max()), "mean": float(array.mean())}


def _duplicates(hashes: dict[str, list[str]]) -> dict[str, Any]:
    """Exact duplicates within each split (rows repeating an earlier row) and across splits (rows of a later split
    whose content is in an earlier one)."""
    within = {split: len(values) - len(set(values)) for split, values in hashes.items()}
    across = {}
    names = list(hashes)
    for i, later in enumerate(names):
        for earlier in names[:i]:
            seen = set(hashes[earlier])
            across[f"{later}_in_{earlier}"] = sum(1 for h in hashes[later] if h in seen)
    return {"within": within, "across": across}


def build_data_report(data: Any, config: Any = None, max_length: int | None = None,
                      count_tokens: Any = None) -> dict[str, Any]:
    """What the data looks like before training, as plain data for `data_report.json`.

    Args:
        data: a `LoadedData` (train, validation and optional test splits).
        config: its `DataConfig` (for the columns read); optional.
        max_length: the tokenizer's truncation length, for the share of texts longer than it.
        count_tokens: `list[str] -> list[int]` untruncated token counts (the model's tokenizer); optional.
    """
    splits = {"train": data.train, "validation": data.validation}
    if getattr(data, "test", None) is not None:
        splits["test"] = data.test
    report = data.report
    train_counts = report.class_counts.get("train", {})
    nonzero = [n for n in train_counts.values() if n > 0]
    ratio = max(nonzero) / min(nonzero) if nonzero else 1.0
    description = data.description
    columns: dict[str, Any] = {"label": getattr(config, "label_column", "label")}
    if data.modality == "text":
        columns["text"] = getattr(config, "text_column", "text")
    elif description.kind == "hub":
        columns["image"] = getattr(config, "image_column", "image")
    reasons: dict[str, int] = {}
    for item in report.skipped:
        key = item.reason.split(":")[0]
        reasons[key] = reasons.get(key, 0) + 1
    out: dict[str, Any] = {
        "format": description.kind,
        "source": description.path,
        "modality": data.modality,
        "columns": columns,
        "num_rows": dict(report.num_rows),
        "validation_source": description.validation_source,
        "class_counts": report.class_counts,
        "imbalance_ratio": ratio,
        "skipped": {"total": report.num_skipped, "by_reason": reasons,
                    "examples": [asdict(s) for s in report.skipped[:10]]},
        "duplicates": _duplicates({name: _content_hashes(split, data.modality) for name, split in splits.items()}),
    }
    if data.modality == "image":
        sizes = {name: _image_sizes(split) for name, split in splits.items()}
        every = [s for values in sizes.values() for s in values]
        out["image_size"] = {"width": _distribution([w for w, _ in every]),
                             "height": _distribution([h for _, h in every]),
                             "distinct_sizes": len(set(every))}
    else:
        lengths: dict[str, Any] = {}
        for name, split in splits.items():
            texts = list(split["text"])
            entry = {"chars": _distribution([len(t) for t in texts]),
                     "words": _distribution([len(t.split()) for t in texts])}
            if count_tokens is not None and max_length:
                sample = texts[:_TOKEN_SAMPLE]
                tokens = list(count_tokens(sample))
                entry["tokens"] = _distribution(tokens)
                entry["longer_than_max_length"] = sum(t > max_length for t in tokens) / max(len(tokens), 1)
                entry["tokens_measured_on"] = len(sample)
            lengths[name] = entry
        out["text_length"] = lengths
        out["max_length"] = max_length
    out["suggestions"] = _suggestions(out)
    return out


def _suggestions(report: dict[str, Any]) -> list[str]:
    tips = []
    if report["imbalance_ratio"] >= IMBALANCE_SUGGESTION_RATIO:
        tips.append(f"classes are imbalanced ({report['imbalance_ratio']:.1f}:1 largest to smallest in train): set "
                    "class_weights: auto (inverse-frequency loss weights) or sampler: balanced, and read the macro "
                    "metrics")
    for key, count in report["duplicates"]["across"].items():
        if count:
            later, earlier = key.split("_in_")
            tips.append(f"{count} {later} row(s) also occur in {earlier}: {later} scores are optimistic; remove them")
    for split, count in report["duplicates"]["within"].items():
        if count:
            tips.append(f"{count} exact duplicate row(s) within {split}")
    for split, entry in report.get("text_length", {}).items():
        share = entry.get("longer_than_max_length")
        if share and share >= 0.05:
            tips.append(f"{share:.0%} of {split} texts are longer than max_length={report['max_length']} tokens "
                        "and get truncated; raise model.max_length if the end of a text matters")
    return tips


def data_report_lines(report: dict[str, Any]) -> list[str]:
    """A few lines for the run log."""
    rows = ", ".join(f"{k} {v}" for k, v in report["num_rows"].items())
    lines = [
        (f"data report: {report['format']} ({report['modality']}), {rows}; imbalance "
         f"{report['imbalance_ratio']:.2f}:1; skipped {report['skipped']['total']}")
    ]
    across = {k: v for k, v in report["duplicates"]["across"].items() if v}
    if across:
        lines.append(f"data report: duplicates across splits {across}")
    lines += [f"data report: suggestion: {tip}" for tip in report["suggestions"]]
    return lines


def format_data_report_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown (data_report.md and the model card)."""
    splits = list(report["num_rows"])
    classes = list(dict.fromkeys(c for counts in report["class_counts"].values() for c in counts))
    lines = [f"- Format: `{report['format']}` ({report['modality']}); columns: "
             + ", ".join(f"{role} `{name}`" for role, name in report["columns"].items()),
             "- Rows: " + ", ".join(f"{s} {report['num_rows'][s]:,}" for s in splits)
             + (f" (validation: {report['validation_source']})" if report.get("validation_source") else ""),
             f"- Class imbalance (train, largest / smallest): {report['imbalance_ratio']:.2f}:1",
             f"- Skipped unreadable or empty items: {report['skipped']['total']}"
             + (f" ({', '.join(f'{k}: {v}' for k, v in report['skipped']['by_reason'].items())})"
                if report["skipped"]["by_reason"] else "")]
    dup = report["duplicates"]
    lines.append("- Exact duplicates (content hash): within "
                 + ", ".join(f"{k} {v}" for k, v in dup["within"].items())
                 + ("; across " + ", ".join(f"{k.replace('_in_', ' in ')} {v}" for k, v in dup["across"].items())
                    if dup["across"] else ""))
    if "image_size" in report:
        size = report["image_size"]
        w, h = size["width"], size["height"]
        if w:
            lines.append(f"- Image size: width {w['min']:.0f}-{w['max']:.0f} (median {w['median']:.0f}), height "
                         f"{h['min']:.0f}-{h['max']:.0f} (median {h['median']:.0f}); {size['distinct_sizes']} "
                         "distinct sizes")
    for split, entry in report.get("text_length", {}).items():
        words = entry["words"]
        if not words:
            continue
        line = f"- Text length ({split}): median {words['median']:.0f} words, p95 {words['p95']:.0f}, max " \
               f"{words['max']:.0f}"
        if "longer_than_max_length" in entry:
            line += f"; {entry['longer_than_max_length']:.1%} longer than max_length={report['max_length']} tokens"
        lines.append(line)
    table = ["", "| Class | " + " | ".join(splits) + " |", "|:--|" + "--:|" * len(splits)]
    table += [f"| {c} | " + " | ".join(str(report["class_counts"].get(s, {}).get(c, 0)) for s in splits) + " |"
              for c in classes[:50]]
    tips = [f"- Suggestion: {tip}." for tip in report["suggestions"]]
    return "\n".join(lines + table + ([""] + tips if tips else []))


def write_data_report(report: dict[str, Any], folder: str | Any) -> None:
    """`data_report.json` and `data_report.md` in `folder` (each written to a temp file, then renamed)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    texts = (json.dumps(report, indent=2, default=str) + "\n",
             "# Data report\n\n" + format_data_report_markdown(report) + "\n")
    for name, text in zip(DATA_REPORT_FILES, texts):
        tmp = folder / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, folder / name)
