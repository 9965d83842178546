"""What :func:`hftransfer.rank` returns: per-candidate scores and ranks, the metrics' agreement, a recommendation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hftransfer.errors import ConfigurationError
from hftransfer.hub.card import add_card_section, check_card_folder


GROUND_TRUTH = "kfold_accuracy"
CARD_SECTION = "ranking"  # <!-- hftransfer:begin ranking --> ... <!-- hftransfer:end ranking --> in a model card


@dataclass
class RankResult:
    """Per-candidate scores and ranks (``rows``), agreement between metrics and a recommendation."""

    rows: list[dict[str, Any]]
    metrics: list[str]  # the metrics scored (a ground-truth column comes last when asked for)
    averaged: list[str]  # the metrics the average rank is taken over
    agreement: dict[str, dict[str, float | None]]  # Kendall tau between metrics over their common candidates
    mean_agreement: float | None  # mean pairwise tau between the transferability metrics (ground truth excluded)
    recommendation: str
    confidence: str  # "high" | "medium" | "low"
    confidence_reason: str
    sample_size: int
    num_classes: int
    data: str
    seconds: float
    output_dir: Path | None = None
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["output_dir"] = str(self.output_dir) if self.output_dir else None
        return out

    def table(self) -> str:
        """The per-candidate table as markdown (scores with their rank in brackets)."""
        head = ["candidate", *self.metrics, "average rank", "feature s", "params (M)"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in self.rows:
            cells = [f"`{row['candidate']}`"]
            for metric in self.metrics:
                value, rank = row["scores"].get(metric), row["ranks"].get(metric)
                cells.append("n/a" if value is None else f"{value:.4g} ({rank})")
            seconds = "n/a" if row["feature_seconds"] is None else f"{row['feature_seconds']:.1f}"
            cells += [f"{row['average_rank']:.2f}", seconds + (" (cached)" if row["cached"] else ""),
                      f"{row['num_parameters'] / 1e6:.2f}"]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def markdown(self) -> str:
        """rank.md: the table, the agreement matrix and the recommendation (fits in a model card)."""
        names = list(self.agreement)
        partial = [m for m in self.metrics if m not in self.averaged and m != GROUND_TRUTH]
        left_out = (f" ({', '.join(partial)}: only candidates with a pretrained classifier, so not averaged)"
                    if partial else "")
        agree = ["| tau | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
        for a in names:
            agree.append(f"| {a} | " + " | ".join("-" if a == b else _fmt(self.agreement[a][b]) for b in names) + " |")
        return "\n".join([
            f"## Backbone ranking on {self.data}",
            "",
            f"Stratified sample of {self.sample_size} training rows ({self.num_classes} classes), one frozen forward "
            f"pass per candidate; higher scores are better, rank 1 is best. Average rank over: "
            f"{', '.join(self.averaged)}{left_out}.",
            "",
            self.table(),
            "",
            f"**Recommendation:** `{self.recommendation}` (confidence: {self.confidence}; {self.confidence_reason}).",
            "",
            "Agreement between metrics (Kendall tau over the candidates both score):",
            "",
            *agree,
            "",
        ])


    def add_to_card(self, model_dir: str | Path) -> Path:
        """Add :meth:`markdown` to the model card (``model_dir/README.md``) as its ``ranking`` section, replacing an
        earlier one; the card's other text is kept. Returns the card's path."""
        return add_card_section(card_folder(model_dir) / "README.md", self.markdown(), CARD_SECTION)


def card_folder(card: str | Path) -> Path:
    """``card`` as a folder, or a clear error before any work."""
    if not Path(card).is_dir():
        raise ConfigurationError(f"card={str(card)!r} is not a folder; pass the saved model's folder (the one "
                                 "holding its README.md), e.g. outputs/run/model.")
    check_card_folder(Path(card))
    return Path(card)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
