"""What a transfer method is: a config dataclass plus a class that reshapes and freezes an ``AutoTransfer``.

Adding a method = one module with a config and a ``TransferMethod`` subclass, registered with
``@register_method("name", ConfigClass)``.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from torch import nn

from hftransfer.errors import ConfigurationError
from hftransfer.utils.config_values import coerce_fields


if TYPE_CHECKING:
    from hftransfer.modeling import AutoTransfer


@dataclass(frozen=True)
class HeadWarmup:
    """A linear probe fitted before training (LP-FT): the head trains alone on frozen-backbone features of the
    un-augmented training split for ``epochs`` passes (AdamW, ``lr`` decayed to 0, ``weight_decay``); the features
    are computed once in ``feature_precision`` ("auto", "bf16" or "fp32", as ``linear_probe``'s)."""

    epochs: int
    lr: float
    weight_decay: float
    feature_precision: str = "auto"


@dataclass
class MethodConfig:
    """Base for method configs: plain dataclasses saved as JSON inside hftransfer_config.json."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, context: str = "") -> MethodConfig:
        """Build from the ``method:`` options; ``context`` (e.g. ``recipe='lora'``) is named in errors."""
        if data is not None and not isinstance(data, dict):
            raise ConfigurationError(f"method={data!r} must be a mapping of {cls.__name__} options.")
        data = dict(data or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            where = f" ({context})" if context else ""
            raise ConfigurationError(
                f"Unknown method option(s) {['method.' + u for u in unknown]} for {cls.__name__}{where}; valid "
                f"options: {sorted(names) or 'none'}. If the config was written for another recipe, run it with "
                "that recipe (recipe=<name>) or delete these options under `method:`."
            )
        return cls(**coerce_fields(cls, data, "method."))


class TransferMethod(abc.ABC):
    """Reshapes a model for one way of transferring (adds adapter modules, freezes parts).

    Subclasses implement :meth:`apply` and :meth:`is_trained_parameter`. ``saves_full_weights`` False means a saved
    model stores only the parameters this method trains (plus the head) and a reference to the base backbone.
    """

    name: ClassVar[str]
    # Human-readable statement of the backbone families and layer types this method acts on. One place read by
    # both :meth:`check_backbone` (its refusal messages) and ``hftransfer recipes`` (the listing).
    supported_backbones: ClassVar[str] = "any backbone"
    saves_full_weights: ClassVar[bool] = True
    trains_backbone: ClassVar[bool] = True  # False: backbone outputs never change (features can be cached)

    def __init__(self, config: MethodConfig):
        self.config = config

    def check_backbone(self, model: AutoTransfer) -> None:
        """Pre-flight: raise ``ConfigurationError`` when this method cannot act on ``model``'s backbone.

        Runs before :meth:`apply` (and so before any data is read by the trainer). The message names what would
        work instead (another method, or a backbone family the method supports). The default accepts any backbone.
        """

    @abc.abstractmethod
    def apply(self, model: AutoTransfer) -> None:
        """Change the model's structure (if needed) and set ``requires_grad`` for this method."""

    @abc.abstractmethod
    def is_trained_parameter(self, name: str) -> bool:
        """Whether the parameter called ``name`` (in ``model.named_parameters()``) is trained by this method."""

    def set_trainable(self, model: nn.Module) -> None:
        for name, param in model.named_parameters():
            param.requires_grad_(self.is_trained_parameter(name))

    def trained_modules(self, model: AutoTransfer) -> list[nn.Module]:
        """Modules this method added inside the backbone that train even when the backbone is in eval mode."""
        return []

    @property
    def keeps_backbone_eval(self) -> bool:
        """Whether, while training, the frozen backbone stays in eval mode (no dropout, fixed statistics); only the
        modules returned by :meth:`trained_modules` switch to train mode."""
        return False

    @property
    def freezes_norm_statistics(self) -> bool:
        """Whether BatchNorm layers keep their running statistics while training (eval mode; their affine
        parameters still train). Frozen BatchNorm layers always do."""
        return False

    @property
    def caches_features(self) -> bool:
        """Whether the head should train on backbone features computed once (the trainer decides whether it can:
        a frozen backbone, deterministic inputs, no target batches)."""
        return False

    def head_warmup(self) -> HeadWarmup | None:
        """Settings of a head-only stage the trainer runs before the optimizer is built (None: no such stage)."""
        return None

    def merge(self, model: AutoTransfer) -> bool:
        """Fold added modules into the backbone weights. Returns True when something was merged."""
        return False

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "config": self.config.to_dict()}
