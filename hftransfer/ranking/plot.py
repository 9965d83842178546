"""rank.png: each metric's rank per candidate (a heat map) and the average rank with the feature-extraction time."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hftransfer.errors import ConfigurationError
from hftransfer.ranking.features import RANDOM_PREFIX
from hftransfer.ranking.result import RankResult


def short_label(label: str, candidates: Sequence[str] = ()) -> str:
    """A candidate's label for the figure: a local folder by its name (``random:`` kept), anything else as given.

    Among ``candidates`` (all of one figure) labels are unique: folders of the same name are told apart by the
    shortest path tail that does (``run1/model``, ``run2/model``).
    """
    return short_labels([label, *(c for c in candidates if c != label)])[0]


def short_labels(labels: Sequence[str]) -> list[str]:
    """:func:`short_label` of each of ``labels``, unique among them."""
    tails = []  # [prefix, path parts of a local folder or None, number of trailing parts shown]
    for label in labels:
        prefix = RANDOM_PREFIX if label.startswith(RANDOM_PREFIX) else ""
        rest = label[len(prefix):]
        local = rest.startswith(("/", "./", "../", "~")) or Path(rest).is_dir()
        tails.append([prefix, Path(rest).parts if local and Path(rest).name else None, 1])

    def shown(i: int) -> str:
        prefix, parts, depth = tails[i]
        if parts is None or depth > len(parts):
            return labels[i]
        return prefix + str(Path(*parts[-depth:]))

    while True:
        names = [shown(i) for i in range(len(labels))]
        clashing = [i for i, name in enumerate(names) if names.count(name) > 1 and labels.count(labels[i]) == 1
                    and tails[i][1] is not None and tails[i][2] <= len(tails[i][1])]
        if not clashing:
            return names
        for i in clashing:
            tails[i][2] += 1


def plot_ranks(result: RankResult, path: Path) -> Path:
    """Write the ranking figure to ``path`` (temporary file, then renamed); needs matplotlib (``report`` extra)."""
    try:
        import matplotlib  # optional dependency

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # optional dependency
    except ImportError as err:  # pragma: no cover - matplotlib ships with the report extra

        raise ConfigurationError("rank.png needs matplotlib: pip install 'hftransfer[report]'.") from err

    candidates = [row["candidate"] for row in result.rows]
    names = short_labels(candidates)
    metrics = result.metrics
    grid = np.array([[np.nan if row["ranks"][m] is None else row["ranks"][m] for m in metrics] for row in result.rows],
                    dtype=float)
    fig, (left, right) = plt.subplots(1, 2, figsize=(5 + 1.1 * len(metrics), 1.2 + 0.6 * len(names)),
                                      gridspec_kw={"width_ratios": [len(metrics), 3]})
    image = left.imshow(grid, cmap="RdYlGn_r", vmin=1, vmax=max(len(names), 2), aspect="auto")
    for i in range(len(names)):
        for j in range(len(metrics)):
            left.text(j, i, "n/a" if np.isnan(grid[i, j]) else int(grid[i, j]), ha="center", va="center", fontsize=9)
    left.set_xticks(range(len(metrics)), metrics, rotation=30, ha="right")
    left.set_yticks(range(len(names)), names)
    left.set_title("rank per metric (1 = best)")
    fig.colorbar(image, ax=left, fraction=0.04)
    average = [row["average_rank"] for row in result.rows]
    bars = right.barh(range(len(names)), average, color="tab:blue")
    right.invert_yaxis()
    right.set_yticks(range(len(names)), [""] * len(names))
    right.set_xlabel("average rank (lower is better)")
    for bar, row in zip(bars, result.rows):
        seconds = "" if row["feature_seconds"] is None else f" {row['feature_seconds']:.1f}s"
        right.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, seconds, va="center", fontsize=8)
    right.set_xlim(0, max(average) * 1.35)
    recommended = names[candidates.index(result.recommendation)]
    right.set_title(f"recommended: {recommended}\nconfidence {result.confidence}", fontsize=9)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
