"""WiSE-FT (Wortsman et al., CVPR 2022): ``theta(alpha) = (1 - alpha) * theta_A + alpha * theta_B`` of two models.

A is the start (a linear probe, the LP head on the pretrained backbone, an earlier checkpoint), B the fine-tuned
model. With several alphas and labelled data, each alpha is scored on the split the caller names, the best one is
saved, and the curve goes to ``wise_ft.json`` / ``wise_ft.png`` inside the saved model folder.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hftransfer.errors import ConfigurationError
from hftransfer.robust.scoring import SplitScorer
from hftransfer.robust.weights import (
    as_full_weights,
    check_compatible,
    check_output_dir,
    read_saved,
    same_format,
    write_model,
)
from hftransfer.weight_mixing import (
    CHOICE_RULE,
    FORMULA,
    PLOT_FILE,
    RECORD_FILE,
    choose_alpha,
    parse_alphas,
    plot_curve,
    weighted_average,
)


logger = logging.getLogger("hftransfer")



@dataclass
class InterpolationResult:
    """The saved model and, when data was given, the accuracy of every alpha tried."""

    output_dir: Path
    alpha: float  # the alpha of the saved model
    curve: list[dict[str, float]] = field(default_factory=list)  # [{"alpha": .., "accuracy": .., "loss": ..}, ...]
    selection: dict[str, Any] | None = None  # data, split, num_samples, metric (None: no data)

    def to_dict(self) -> dict[str, Any]:
        return {"output_dir": str(self.output_dir), "alpha": self.alpha, "curve": self.curve,
                "selection": self.selection}


def interpolate(
    model_a: str | Path,
    model_b: str | Path,
    *,
    output_dir: str | Path,
    alphas: float | str | Sequence[float] = 0.5,
    data: str | Path | None = None,
    split: str | None = None,
    batch_size: int = 32,
    overwrite: bool = False,
    progress_bar: bool = False,
    **data_options: Any,
) -> InterpolationResult:
    """Interpolate the weights of two saved models (WiSE-FT) and save the result in the same format.

    Both folders must share the base model, head and label map. Folders of one method store the same tensors (full
    weights, or adapter-only weights), which are interpolated as stored; folders of different methods (a linear
    probe and its fine-tuned model, LoRA and full) are loaded, their adapters merged, and full weights saved.
    Several ``alphas`` need ``data``: each is scored on ``split`` (a validation split you name, never target labels)
    and the most accurate is saved (ties: the alpha nearest 0.5).

    Args:
        model_a / model_b: folders saved by hftransfer (or training output_dirs); alpha 0 is A, 1 is B.
        output_dir: the model folder to write (loadable with ``AutoTransfer.from_pretrained``).
        alphas: one alpha, a list, or a comma-separated string.
        data / split / **data_options: labelled data to score on, as in ``hftransfer.evaluate``.
        overwrite: replace an existing non-empty ``output_dir``.
    """
    values = parse_alphas(alphas)
    if len(values) > 1 and data is None:
        raise ConfigurationError(f"alphas={values} are several but data=None: pass data=... (and split=...) to choose "
                                 "among them, or a single alpha.")
    a, b = read_saved(model_a, "model_a"), read_saved(model_b, "model_b")
    output = check_output_dir(output_dir, [a, b], overwrite)
    keys, scored_with = ["model_a", "model_b"], a.folder
    if same_format([a, b]):
        check_compatible([a, b], keys)
    else:  # e.g. a linear probe (head only) and its fine-tuned model: load both, mix full weights
        check_compatible([a, b], keys, skip=("method", "weights"), tensors=False)
        (a, _), (b, scored_with) = as_full_weights(a), as_full_weights(b)
        check_compatible([a, b], keys, skip=("method", "weights"))
    mix = lambda alpha: weighted_average([a.state, b.state], [1.0 - alpha, alpha])  # noqa: E731  (one at a time)
    curve: list[dict[str, float]] = []
    selection = None
    chosen = values[0]
    if data is not None:
        scorer = SplitScorer(scored_with, data, split, batch_size, progress_bar, **data_options)
        for alpha in values:
            metrics = scorer(mix(alpha))
            curve.append({"alpha": alpha, **metrics})
            logger.info("wise-ft alpha %.3f: accuracy %.4f on %s", alpha, metrics["accuracy"], scorer.used_split)
        chosen, selection = choose_alpha(curve), scorer.selection()
    record = {"model_a": str(a.folder), "model_b": str(b.folder), "formula": FORMULA, "alpha": chosen,
              "alphas": values, "weights": a.config["weights"], "curve": curve, "selection": selection,
              "rule": CHOICE_RULE.format(metric="accuracy", split="the named split") if curve else "given alpha"}
    extra: dict[str, Any] = {RECORD_FILE: record}
    if len(curve) > 1:
        extra[PLOT_FILE] = lambda path: plot_curve(curve, chosen, selection, path)
    write_model(b, mix(chosen), output, extra)
    return InterpolationResult(output, chosen, curve, selection)
