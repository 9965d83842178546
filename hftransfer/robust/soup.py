"""Model soups (Wortsman et al., ICML 2022): average the weights of models fine-tuned from one initialisation.

``uniform`` averages all of them. ``greedy`` sorts them by held-out accuracy and adds one to the soup only if the
soup's accuracy does not drop. A replication (arXiv 2301.10092) found soups much weaker for ResNets/EfficientNets
than for ViTs: ``soup.json`` records every ingredient's accuracy beside the soup's, so measure before claiming.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hftransfer.errors import ConfigurationError
from hftransfer.robust.scoring import SplitScorer
from hftransfer.robust.weights import check_compatible, check_output_dir, read_saved, write_model
from hftransfer.weight_mixing import weighted_average


logger = logging.getLogger("hftransfer")

METHODS = ("uniform", "greedy")
RECORD_FILE = "soup.json"


@dataclass
class SoupResult:
    """The saved soup, which models went in, and (with data) each ingredient's and the soup's accuracy."""

    output_dir: Path
    method: str
    # [{"model", "accuracy", "in_soup", "soup_accuracy_with_it" (greedy: the soup's accuracy when it was tried)}]
    ingredients: list[dict[str, Any]] = field(default_factory=list)
    accuracy: float | None = None  # the soup's, on the selection split
    selection: dict[str, Any] | None = None

    @property
    def used(self) -> list[str]:
        return [row["model"] for row in self.ingredients if row["in_soup"]]

    def to_dict(self) -> dict[str, Any]:
        return {"output_dir": str(self.output_dir), "method": self.method, "ingredients": self.ingredients,
                "accuracy": self.accuracy, "selection": self.selection}


def soup(
    models: Sequence[str | Path],
    *,
    output_dir: str | Path,
    method: str = "uniform",
    data: str | Path | None = None,
    split: str | None = None,
    batch_size: int = 32,
    overwrite: bool = False,
    progress_bar: bool = False,
    **data_options: Any,
) -> SoupResult:
    """Average saved models that share an initialisation, architecture and label map; save the soup.

    Args:
        models: two or more folders saved by hftransfer (or training output_dirs).
        output_dir: the soup's model folder (loadable with ``AutoTransfer.from_pretrained``), with ``soup.json``.
        method: ``"uniform"`` (all models) or ``"greedy"`` (needs ``data``).
        data / split / **data_options: labelled held-out data (a validation split you name) as in
            ``hftransfer.evaluate``; with ``uniform`` it only reports accuracies.
        overwrite: replace an existing non-empty ``output_dir``.
    """
    if method not in METHODS:
        raise ConfigurationError(f"method={method!r} is not a soup method; choose one of {list(METHODS)}.")
    if isinstance(models, (str, Path)) or len(models) < 2:
        raise ConfigurationError(f"models={models!r} must list at least two model folders to average.")
    if method == "greedy" and data is None:
        raise ConfigurationError("method='greedy' ranks and accepts models by held-out accuracy: pass data=... and "
                                 "split=... (CLI: --data D --split S), or use method='uniform'.")
    keys = [f"models[{i}]" for i in range(len(models))]
    saved = [read_saved(folder, key) for folder, key in zip(models, keys)]
    check_compatible(saved, keys)
    output = check_output_dir(output_dir, saved, overwrite)
    states = [m.state for m in saved]
    names = [str(m.folder) for m in saved]
    accuracies: list[float | None] = [None] * len(saved)
    tried: dict[int, float] = {}  # greedy: the accuracy of the soup with model i added, when it was tried
    soup_accuracy, selection = None, None
    scorer = None
    if data is not None:
        scorer = SplitScorer(saved[0].folder, data, split, batch_size, progress_bar, **data_options)
        accuracies = [scorer(state)["accuracy"] for state in states]
    if method == "uniform":
        members = list(range(len(saved)))
        result_state = weighted_average(states, [1.0 / len(states)] * len(states))
        if scorer is not None:
            soup_accuracy = scorer(result_state)["accuracy"]
    else:
        order = sorted(range(len(saved)), key=lambda i: -accuracies[i])
        members, result_state, soup_accuracy = [order[0]], states[order[0]], accuracies[order[0]]
        for i in order[1:]:
            candidate = weighted_average([states[j] for j in members + [i]], [1.0 / (len(members) + 1)] *
                                         (len(members) + 1))
            accuracy = tried[i] = scorer(candidate)["accuracy"]
            keep = accuracy >= soup_accuracy
            logger.info("greedy soup: %s %s (soup accuracy %.4f -> %.4f)", names[i], "added" if keep else "skipped",
                        soup_accuracy, accuracy)
            if keep:
                members, result_state, soup_accuracy = members + [i], candidate, accuracy
    if scorer is not None:
        selection = scorer.selection()
    ingredients = [{"model": names[i], "accuracy": accuracies[i], "in_soup": i in members,
                    **({"soup_accuracy_with_it": tried[i]} if i in tried else {})} for i in range(len(saved))]
    record = {"method": method, "ingredients": ingredients, "accuracy": soup_accuracy, "selection": selection,
              "rule": ("average of all models" if method == "uniform" else
                       "sorted by accuracy on the named split; a model joins only if the soup's accuracy does not "
                       "drop (Wortsman et al. 2022)")}
    write_model(saved[members[0]], result_state, output, {RECORD_FILE: record})
    return SoupResult(output, method, ingredients, soup_accuracy, selection)
