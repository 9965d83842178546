"""The "linear probe first" options, shared by ``lp_ft`` and the parameter-efficient methods that offer them.

A method whose config inherits :class:`HeadProbeConfig` asks the trainer for a head-only stage when
``probe_epochs > 0``: the head is fitted on the frozen model's features of the training split before training starts
(``training/head_warmup.py``), so the trained parameters start from a fitted head instead of a random one (LP-FT's
first stage, Kumar et al., ICLR 2022). Returned by the method's :meth:`TransferMethod.head_warmup`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hftransfer.errors import ConfigurationError
from hftransfer.methods.base import HeadWarmup, MethodConfig
from hftransfer.methods.linear_probe import FEATURE_PRECISIONS, LinearProbeConfig


_PRECISION_HELP = LinearProbeConfig.__dataclass_fields__["feature_precision"].metadata["help"]  # the same option


@dataclass
class HeadProbeConfig(MethodConfig):
    """Method options of an optional linear probe fitted before training (0 passes: none, the head starts random)."""

    probe_epochs: int = field(default=0, metadata={"help": (
        "Passes of a linear probe over the cached training features before training (mini-batches of up to 1024 "
        "rows, AdamW, LR decayed to 0 by a cosine); training then starts from that fitted head. 0: no probe, the head "
        "starts random. The features are computed once (one forward pass over the training split).")})
    probe_lr: float = field(default=3e-3, metadata={"help": (
        "AdamW learning rate of the probe (peak of the cosine); that of the linear_probe recipe.")})
    probe_weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay of the probe."})
    feature_precision: str = field(default="auto", metadata={"help": _PRECISION_HELP})

    def __post_init__(self):
        rules = {
            "probe_epochs": (isinstance(self.probe_epochs, int) and not isinstance(self.probe_epochs, bool)
                             and self.probe_epochs >= 0, "use a whole number of passes >= 0 (e.g. 100; 0: no probe)."),
            "probe_lr": (_number(self.probe_lr) and self.probe_lr > 0, "use a learning rate > 0 (e.g. 0.003)."),
            "probe_weight_decay": (_number(self.probe_weight_decay) and self.probe_weight_decay >= 0,
                                   "use a weight decay >= 0 (e.g. 1e-4)."),
            "feature_precision": (self.feature_precision in FEATURE_PRECISIONS,
                                  f"choose one of {list(FEATURE_PRECISIONS)}."),
        }
        for name, (ok, fix) in rules.items():
            if not ok:
                raise ConfigurationError(f"method.{name}={getattr(self, name)!r} is invalid: {fix}")

    def head_warmup(self) -> HeadWarmup | None:
        """The probe stage these options ask for (None when ``probe_epochs`` is 0)."""
        if not self.probe_epochs:
            return None
        return HeadWarmup(epochs=self.probe_epochs, lr=float(self.probe_lr),
                          weight_decay=float(self.probe_weight_decay), feature_precision=self.feature_precision)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
