"""Stratified hold-out split and stratified subsampling, deterministic for a given seed."""

from __future__ import annotations

import numpy as np


def allocate(counts: np.ndarray, total: int, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Split `total` over classes in proportion to `counts`, each share kept within `[low, high]`.

    Largest-remainder rounding, so the shares sum to `total` exactly (callers keep `low.sum() <= total <= high.sum()`).
    """
    counts = np.asarray(counts, dtype=np.float64)
    quota = counts * total / max(counts.sum(), 1.0)
    shares = np.clip(np.floor(quota).astype(np.int64), low, high)
    while shares.sum() < total:
        shares[np.argmax(np.where(shares < high, quota - shares, -np.inf))] += 1
    while shares.sum() > total:
        shares[np.argmin(np.where(shares > low, quota - shares, np.inf))] -= 1
    return shares


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out about `fraction` of the rows per class: returns sorted `(train_indices, validation_indices)`.

    Every class with at least two rows lands in both splits; a single-row class stays in train.
    """
    labels = np.asarray(labels)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    low = (counts >= 2).astype(np.int64)
    high = np.maximum(counts - 1, 0)
    total = int(np.clip(round(len(labels) * fraction), low.sum(), high.sum()))
    picked = _pick(inverse.reshape(-1), counts, allocate(counts, total, low, high), seed)
    mask = np.zeros(len(labels), dtype=bool)
    mask[picked] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def stratified_subsample(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted indices of `size` rows drawn per class in proportion, at least one per class when `size` allows."""
    labels = np.asarray(labels)
    if size >= len(labels):
        return np.arange(len(labels))
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    low = np.full(len(counts), 1 if size >= len(counts) else 0, dtype=np.int64)
    return np.sort(_pick(inverse.reshape(-1), counts, allocate(counts, size, low, counts), seed))


def _pick(inverse: np.ndarray, counts: np.ndarray, shares: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    groups = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
    return np.concatenate([rng.permutation(g)[:k] for g, k in zip(groups, shares)] + [np.empty(0, np.int64)])
