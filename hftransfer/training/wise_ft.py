"""WiSE-FT as a training option (``wise_ft: {alphas: [...]}``): the run's start and its best model, interpolated.

The start is the model as set-up leaves it, before the first optimizer step: for ``lp_ft`` the pretrained backbone
with the fitted probe head, for the other recipes the pretrained backbone with its initial head (and adapters). At
the end of the run every alpha mixes ``(1 - alpha) * start + alpha * best`` over the tensors training changed, is
scored on the validation split (the split that already picks the best epoch; never test or target labels), and the
best alpha becomes the saved model. The curve goes to metrics.json (``wise_ft``), ``wise_ft.json`` and ``wise_ft.png``
in the model folder. The start is kept in ``output_dir`` during the run, so a resumed run interpolates from it too.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

import hftransfer.weight_mixing as mixing
from hftransfer.errors import ConfigurationError
from hftransfer.training.sharding import shards_parameters
from hftransfer.utils.io import load_state_dict, save_state_dict, write_json


if TYPE_CHECKING:
    from accelerate import Accelerator
    from torch import nn

START_FILE = "wise_ft_start.safetensors"  # in output_dir while the run lasts (read on resume), removed at the end
DEFAULT_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
START = "the model after set-up, before the first optimizer step (lp_ft: pretrained backbone + fitted probe head)"


@dataclass
class WiseFTConfig:
    """WiSE-FT at the end of training (Wortsman et al., CVPR 2022)."""

    alphas: list[float] = field(default_factory=lambda: list(DEFAULT_ALPHAS), metadata={"help": (
        "Interpolation weights in [0, 1] to score on the validation split (0: the start, 1: the fine-tuned best "
        "model); the best is saved. Each costs one validation pass. [1.0] saves the fine-tuned model unchanged.")})

    def __post_init__(self) -> None:
        try:
            self.alphas = mixing.parse_alphas(self.alphas)
        except (ConfigurationError, TypeError, ValueError) as err:
            raise ConfigurationError(f"wise_ft.alphas={self.alphas!r} is invalid: use a list of numbers in [0, 1], "
                                     f"e.g. [0, 0.25, 0.5, 0.75, 1] ({err}).") from err


Evaluate = Callable[[], dict[str, Any]]
Log = Callable[[str], None]


class WiseFT:
    """Remembers the start of a run and, at its end, puts the best interpolation into the model."""

    def __init__(self, config: WiseFTConfig, output_dir: Path, accelerator: Accelerator, log: Log):
        self.config, self.path, self.accelerator, self.log = config, Path(output_dir) / START_FILE, accelerator, log
        self.start: dict[str, torch.Tensor] | None = None

    @classmethod
    def for_run(cls, config: WiseFTConfig | None, output_dir: Path, accelerator: Accelerator,
                log: Log) -> WiseFT | None:
        """None without ``wise_ft``; raises before training where the weights are sharded across processes."""
        if config is None:
            return None
        if shards_parameters(accelerator):
            raise ConfigurationError("wise_ft needs every process to hold the whole model, but this run shards the "
                                     "parameters (FSDP / ZeRO-3). Drop wise_ft, or run without sharding, or "
                                     "interpolate the saved models afterwards with `hftransfer interpolate`.")
        return cls(config, output_dir, accelerator, log)

    def remember_start(self, model: nn.Module, resumed: bool) -> None:
        """Keep the start weights (written to ``output_dir`` by the main process); a resumed run reads them back."""
        if resumed:
            if not self.path.is_file():
                raise ConfigurationError(
                    f"wise_ft is set but the run resumes from a checkpoint without its start weights ({self.path} is "
                    "missing: the interrupted run had no wise_ft). Start afresh with overwrite_output_dir=true, or "
                    "drop wise_ft and interpolate afterwards with `hftransfer interpolate`.")
            self.start = load_state_dict(self.path)
            return
        self.start = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
                      if v.is_floating_point()}
        if self.accelerator.is_main_process:
            tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
            save_state_dict(self.start, tmp)
            os.replace(tmp, self.path)

    def apply(self, model: nn.Module, evaluate: Evaluate, metric: str, greater_is_better: bool,
              save: Callable[[], None] | None = None) -> dict[str, Any]:
        """Score every alpha with ``evaluate`` (validation metrics of the model as it is), load the best into
        ``model`` (evaluated last, so the caller's last evaluation is the saved model's), ``save()`` it and return
        the record for metrics.json."""
        end = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items() if k in self.start}
        changed = sorted(k for k in self.start if not torch.equal(self.start[k], end[k]))
        start = {k: self.start[k] for k in changed}
        end = {k: end[k] for k in changed}
        curve = []
        for alpha in self.config.alphas:
            model.load_state_dict(mixing.weighted_average([start, end], [1.0 - alpha, alpha]), strict=False)
            metrics = evaluate()
            curve.append({"alpha": alpha, **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}})
            self.log(f"wise_ft alpha {alpha:g}: validation {metric} {metrics[metric]:.4f}")
        chosen = mixing.choose_alpha(curve, metric, greater_is_better)
        if chosen != curve[-1]["alpha"]:
            model.load_state_dict(mixing.weighted_average([start, end], [1.0 - chosen, chosen]), strict=False)
            evaluate()
        if save is not None:
            save()
        self.log(f"wise_ft: alpha {chosen:g} saved ({len(changed)} of {len(self.start)} tensors changed in training)")
        return {"alpha": chosen, "alphas": list(self.config.alphas), "formula": mixing.FORMULA, "model_a": START,
                "model_b": "the fine-tuned model of the best epoch", "curve": curve,
                "tensors_interpolated": len(changed), "selection": {"split": "validation", "metric": metric},
                "rule": mixing.CHOICE_RULE.format(metric=metric, split="the validation split")}

    def write(self, record: dict[str, Any], model_dir: Path) -> None:
        """``wise_ft.json`` (and the curve's ``wise_ft.png``) in the model folder; the start file is removed."""
        if self.accelerator.is_main_process:
            write_json(Path(model_dir) / mixing.RECORD_FILE, record)
            if len(record["curve"]) > 1 and "accuracy" in record["curve"][0]:
                mixing.plot_curve(record["curve"], record["alpha"], record["selection"],
                                  Path(model_dir) / mixing.PLOT_FILE)
            self.path.unlink(missing_ok=True)
