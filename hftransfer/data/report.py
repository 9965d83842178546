"""What a load produced: per-split counts, skipped items and a description for model cards."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


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
