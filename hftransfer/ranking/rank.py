"""``hftransfer.rank``: score candidate backbones on a sample of your data before training any of them.

Each candidate runs one frozen forward pass over a stratified sample of the training split; the features are scored
by several transferability metrics. Published work (Agostinelli et al., ECCV 2022) finds no metric best everywhere,
so the result reports every metric's rank, the average rank and how much the metrics agree (Kendall tau), and the
recommendation's confidence is low when they disagree.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from hftransfer.errors import ConfigurationError
from hftransfer.ranking import metrics as M
from hftransfer.ranking.features import (
    Candidate,
    CandidateFeatures,
    candidate_features,
    check_candidates,
    sample_indices,
)
from hftransfer.ranking.plot import plot_ranks
from hftransfer.ranking.result import GROUND_TRUTH, RankResult, card_folder


logger = logging.getLogger(__name__)

FEATURE_METRICS = ("logme", "h_score", "nleep")  # every candidate has them
SOURCE_METRICS = ("leep", "nce")  # only candidates with a pretrained classifier
MIN_PER_CLASS = 2


def _load(data: Any):
    from hftransfer.data import DataConfig, LoadedData, load_data  # heavy: loads datasets

    if isinstance(data, LoadedData):
        return data, data.description.name
    if isinstance(data, (str, Path)):
        config = DataConfig(source=str(data))
    elif isinstance(data, dict):
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(DataConfig)})
        if unknown:
            raise ConfigurationError(f"data has unknown option(s) {unknown}; valid: "
                                     f"{[f.name for f in dataclasses.fields(DataConfig)]}.")
        config = DataConfig(**data)
    elif isinstance(data, DataConfig):
        config = data
    else:
        raise ConfigurationError(f"data={data!r} must be a source string, a data config dict, a DataConfig or "
                                 "LoadedData.")
    loaded = load_data(config)
    return loaded, loaded.description.name or str(config.source)


def _check_sample(labels: np.ndarray, sample: int, num_classes: int) -> int:
    if isinstance(sample, bool) or not isinstance(sample, (int, np.integer)) or sample < 1:
        raise ConfigurationError(f"sample={sample!r} must be a positive number of rows (default 2000).")
    present = int((np.bincount(labels, minlength=num_classes) > 0).sum())
    if present < 2:
        raise ConfigurationError(f"the training split has {present} class with rows; ranking needs at least 2 "
                                 "labelled classes.")
    size = min(int(sample), len(labels))
    need = MIN_PER_CLASS * num_classes
    if size < need:
        raise ConfigurationError(f"sample={sample} gives {size} rows for {num_classes} classes; use at least {need} "
                                 f"({MIN_PER_CLASS} per class) so every metric can be computed.")
    return size


def _scores(feat: CandidateFeatures, kfold: bool, seed: int) -> dict[str, float | None]:
    x, y = feat.features, feat.labels
    out: dict[str, float | None] = {"logme": M.logme(x, y), "h_score": M.h_score(x, y), "nleep": M.nleep(x, y,
                                                                                                       seed=seed)}
    probs = M.softmax(feat.source_logits) if feat.source_logits is not None else None
    out["leep"] = M.leep(probs, y) if probs is not None else None
    out["nce"] = M.nce(probs, y) if probs is not None else None
    if kfold:
        out[GROUND_TRUTH] = M.kfold_probe_accuracy(x, y, seed=seed)
    return out


def _ranks(values: list[float | None]) -> list[int | None]:
    """1 = best (highest); ties share the better rank; None stays None."""
    from scipy.stats import rankdata  # heavy: loaded only when used

    present = [i for i, v in enumerate(values) if v is not None]
    ranks: list[int | None] = [None] * len(values)
    order = rankdata([-values[i] for i in present], method="min")
    for i, r in zip(present, order):
        ranks[i] = int(r)
    return ranks


def _kendall(a: list[float | None], b: list[float | None]) -> float | None:
    from scipy.stats import kendalltau  # heavy: loaded only when used

    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    if len(pairs) < 2:
        return None
    tau = kendalltau(*zip(*pairs)).statistic
    return None if not np.isfinite(tau) else float(tau)


def _recommend(rows: list[dict], metrics: list[str], mean_tau: float | None) -> tuple[str, str, str]:
    """Best average rank. Confidence: high when every metric that scores it puts it first and the metrics agree
    (mean tau >= 0.6), medium when most put it first (mean tau >= 0.2), else low; a k-fold probe that prefers another
    candidate caps it at medium."""
    best = min(rows, key=lambda r: (r["average_rank"], r["candidate"]))
    # metrics that rank it against at least one other candidate (LEEP with one source head ranks nothing)
    scored = [m for m in metrics if best["ranks"].get(m) is not None
              and sum(r["ranks"].get(m) is not None for r in rows) >= 2]
    votes = [m for m in scored if best["ranks"][m] == 1]
    tau_text = "n/a" if mean_tau is None else f"{mean_tau:.2f}"
    reason = f"{len(votes)} of {len(scored)} metrics put it first; mean Kendall tau between metrics {tau_text}"
    if len(votes) == len(scored) and mean_tau is not None and mean_tau >= 0.6:
        level = "high"
    elif 2 * len(votes) > len(scored) and (mean_tau is None or mean_tau >= 0.2):
        level = "medium"
    else:
        level = "low"
    if best["ranks"].get(GROUND_TRUTH) not in (None, 1):
        preferred = [r["candidate"] for r in rows if r["ranks"].get(GROUND_TRUTH) == 1]
        reason += f"; the k-fold probe prefers {', '.join(preferred)}"
        level = "medium" if level == "high" else level
    return best["candidate"], level, reason


def rank(
    data: Any,
    candidates: Sequence[str | Candidate],
    *,
    sample: int = 2000,
    output_dir: str | Path | None = "rank",
    cache_dir: str | Path | None = None,
    kfold: bool = False,
    batch_size: int = 32,
    seed: int = 0,
    precision: str = "auto",
    image_size: int | None = None,
    max_length: int | None = None,
    card: str | Path | None = None,
    progress: bool = True,
) -> RankResult:
    """Rank ``candidates`` (model names; ``random:<name>`` for a random init) on ``data`` before training.

    Args:
        data: a source (image folder, CSV, ``"sklearn_digits"``, ...), a ``data:`` config dict as a training YAML
            takes, a ``DataConfig`` or ``LoadedData``. Its training split is sampled.
        sample: rows of the stratified sample (the whole split when it is smaller).
        output_dir: where rank.json, rank.md and rank.png go (None: nothing written, no plot).
        cache_dir: feature cache (default ``<output_dir>/features``); a second call reads features from there, and
            a ``linear_probe`` run with ``method.cache_dir`` set to it reuses them when the sample is the whole split.
        kfold: also measure a 5-fold logistic-regression probe's accuracy on the features (a cheap ground truth).
        precision: feature precision, "auto" (bf16 where fast), "bf16" or "fp32".
        image_size / max_length: the input size the training will use (``model.image_size`` /
            ``model.max_length``): image candidates are scored at ``image_size`` pixels (None: each candidate's
            pretrained resolution), text candidates truncate at ``max_length`` tokens (None: 128).
        card: a saved model's folder: the ranking table goes into its model card (``RankResult.add_to_card``).
    """
    start = time.perf_counter()
    parsed = [Candidate.parse(c) for c in (candidates.split(",") if isinstance(candidates, str) else candidates)]
    check_candidates(parsed)
    if precision not in ("auto", "bf16", "fp32"):
        raise ConfigurationError(f"precision={precision!r} is invalid; choose 'auto', 'bf16' or 'fp32'.")
    for name, value in (("image_size", image_size), ("max_length", max_length)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
            raise ConfigurationError(f"{name}={value!r} must be a positive integer or None (the model's default).")
    if card is not None:
        card_folder(card)
    if output_dir is None and cache_dir is None:
        raise ConfigurationError("output_dir=None needs a cache_dir for the features; pass one or an output_dir.")
    loaded, data_name = _load(data)
    labels = np.asarray(loaded.train.with_format("arrow")["label"], dtype=np.int64)
    size = _check_sample(labels, sample, loaded.num_labels)

    indices = sample_indices(labels, size, seed)
    cache = Path(cache_dir) if cache_dir is not None else Path(output_dir) / "features"
    feats = [candidate_features(c, loaded.train, indices, cache, batch_size=batch_size, seed=seed,
                                precision=precision, image_size=image_size, max_length=max_length,
                                progress=progress) for c in parsed]
    for feat in feats:
        if feat.features.shape[0] != size:
            raise RuntimeError(f"{feat.candidate.label}: {feat.features.shape[0]} feature rows for {size} samples.")
    scores = [_scores(f, kfold, seed) for f in feats]
    result = _assemble(feats, scores, kfold, size, loaded.num_labels, data_name)
    result.seconds = time.perf_counter() - start
    if output_dir is not None:
        write_outputs(result, Path(output_dir))
    if card is not None:
        result.add_to_card(card)
    return result


def _assemble(feats: list[CandidateFeatures], scores: list[dict], kfold: bool, size: int, num_classes: int,
              data_name: str) -> RankResult:
    metric_names = [*FEATURE_METRICS, *[m for m in SOURCE_METRICS if any(s[m] is not None for s in scores)]]
    averaged = [m for m in metric_names if all(s[m] is not None for s in scores)]
    shown = metric_names + ([GROUND_TRUTH] if kfold else [])
    ranks = {m: _ranks([s[m] for s in scores]) for m in shown}
    rows = []
    for i, feat in enumerate(feats):
        rows.append({
            "candidate": feat.candidate.label,
            "scores": {m: scores[i][m] for m in shown},
            "ranks": {m: ranks[m][i] for m in shown},
            "average_rank": float(np.mean([ranks[m][i] for m in averaged])),
            "feature_seconds": feat.seconds,
            "cached": feat.cached,
            "num_parameters": feat.num_parameters,
            "num_features": int(feat.features.shape[1]),
            "has_source_head": feat.source_logits is not None,
            "cache_file": str(feat.cache_path) if feat.cache_path else None,
        })
    agreement = {a: {b: (1.0 if a == b else _kendall([s[a] for s in scores], [s[b] for s in scores]))
                     for b in shown} for a in shown}
    taus = [agreement[a][b] for a, b in combinations(metric_names, 2) if agreement[a][b] is not None]
    mean_tau = float(np.mean(taus)) if taus else None
    rows.sort(key=lambda r: (r["average_rank"], r["candidate"]))
    best, level, reason = _recommend(rows, metric_names, mean_tau)
    return RankResult(rows, shown, averaged, agreement, mean_tau, best, level, reason, size, num_classes, data_name,
                      0.0)


def write_outputs(result: RankResult, output_dir: Path) -> None:
    """rank.json, rank.md and rank.png in ``output_dir`` (each written to a temporary name, then renamed)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    result.output_dir = output_dir
    result.files = ["rank.json", "rank.md", "rank.png"]
    for name, text in (("rank.json", json.dumps(result.to_dict(), indent=2)), ("rank.md", result.markdown())):
        tmp = output_dir / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(output_dir / name)
    plot_ranks(result, output_dir / "rank.png")
