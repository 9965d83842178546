"""Weight-space mixing, shared by WiSE-FT (the ``wise_ft`` training option and ``hftransfer interpolate``) and model
soups: the formula, the alphas a user may give, how one is chosen, the weighted average itself and the curve's plot.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from hftransfer.errors import ConfigurationError
from hftransfer.metrics.plots import new_figure, save_figure


logger = logging.getLogger("hftransfer")

FORMULA = "theta(alpha) = (1 - alpha) * theta_A + alpha * theta_B"
RECORD_FILE = "wise_ft.json"  # in the model folder: the alphas, the curve and the chosen alpha
PLOT_FILE = "wise_ft.png"
CHOICE_RULE = "best {metric} on {split}; ties: the alpha nearest 0.5"


def weighted_average(states: Sequence[dict[str, torch.Tensor]], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """``sum_i weights[i] * states[i]`` per tensor, computed in float64 and stored in the tensor's own dtype.

    A weight of 1 with the others 0 gives that state back bit for bit. Integer tensors (BatchNorm's
    ``num_batches_tracked``) cannot be mixed: they come from the state with the largest weight.
    """
    if len(states) != len(weights) or not states:
        raise ConfigurationError(f"weighted_average needs one weight per state; received {len(weights)} weights for "
                                 f"{len(states)} states.")
    heaviest = max(range(len(weights)), key=lambda i: weights[i])
    out = {}
    for name, reference in states[heaviest].items():
        if not reference.is_floating_point():
            out[name] = reference.clone()
            continue
        total = torch.zeros(reference.shape, dtype=torch.float64)
        for state, weight in zip(states, weights):
            if weight != 0.0:
                total.add_(state[name].to(torch.float64), alpha=float(weight))
        out[name] = total.to(reference.dtype)
    return out


def parse_alphas(alphas: float | str | Sequence[float]) -> list[float]:
    """``0.5`` / ``"0,0.25,0.5"`` / ``[0, 0.5, 1]`` -> a sorted list of distinct alphas in [0, 1]."""
    if isinstance(alphas, str):
        try:
            values = [float(x) for x in alphas.split(",") if x.strip()]
        except ValueError as err:
            raise ConfigurationError(f"alphas={alphas!r} must be comma-separated numbers like '0,0.25,0.5'.") from err
    elif isinstance(alphas, (int, float)) and not isinstance(alphas, bool):
        values = [float(alphas)]
    else:
        values = [float(x) for x in alphas]
    bad = [x for x in values if not (math.isfinite(x) and 0.0 <= x <= 1.0)]
    if not values or bad:
        raise ConfigurationError(f"alphas={alphas!r} must be one or more numbers in [0, 1] (0: model A, 1: model B); "
                                 f"out of range: {bad}.")
    return sorted(set(values))


def choose_alpha(curve: Sequence[dict[str, float]], metric: str = "accuracy", greater_is_better: bool = True) -> float:
    """The alpha of ``curve`` with the best ``metric`` (:data:`CHOICE_RULE`)."""
    sign = 1.0 if greater_is_better else -1.0
    return max(curve, key=lambda row: (sign * row[metric], -abs(row["alpha"] - 0.5)))["alpha"]


def plot_curve(curve: list[dict[str, float]], chosen: float, selection: dict[str, Any] | None, path: Path) -> None:
    """Accuracy against alpha, the chosen alpha marked (skipped with a warning without matplotlib)."""
    try:
        figure = new_figure((5.0, 3.5))
    except ImportError as err:  # matplotlib is the `report` extra
        logger.warning("wise_ft.png skipped: %s", err)
        return
    ax = figure.subplots()
    ax.plot([row["alpha"] for row in curve], [row["accuracy"] for row in curve], marker="o")
    ax.axvline(chosen, color="grey", linestyle="--", label=f"chosen alpha {chosen:g}")
    split = (selection or {}).get("split") or "?"
    ax.set_xlabel("alpha (0: model A, 1: model B)")
    ax.set_ylabel(f"accuracy ({split})")
    ax.set_title("WiSE-FT interpolation")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(figure, path)
