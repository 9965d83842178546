"""One PEFT-backed base for the PEFT catalogue (``lora``, ``ia3``, ``loha``, ``lokr``, ``vera``, ``oft``, ``boft``).

A catalogue method is a config dataclass (its own options on top of :class:`PeftMethodConfig`) plus a thin
:class:`PeftMethod` subclass that builds the PEFT config (:meth:`PeftMethod.peft_config`) and, where PEFT restricts
them, says which layers it can take (:attr:`PeftMethod.layer_types`, :meth:`PeftMethod.accepts`). Target resolution,
the pre-flight check, trained-parameter naming, saving and merging live here once.
"""

from __future__ import annotations

import abc
import re
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from torch import nn

from hftransfer.errors import ConfigurationError
from hftransfer.methods.base import MethodConfig, TransferMethod
from hftransfer.methods.registry import working_methods
from hftransfer.methods.targets import default_target_modules
from hftransfer.saved_format import HEAD_PREFIX


if TYPE_CHECKING:
    from hftransfer.modeling import AutoTransfer

_NORM_RE = re.compile(r"(^|\.)(norm\d*|bn\d*|LayerNorm|layernorm\w*|ln_\w+|_bn\d+|\w*layer_norm)\.")


@dataclass
class PeftMethodConfig(MethodConfig):
    """Options every PEFT-backed method has (targets, norms); subclasses add their own."""

    target_modules: list[str] | str | None = field(default=None, metadata={
        "help": "Modules to adapt: names (suffix match) or a regex on full names. None: the backbone's block layers "
                "(see methods/targets.py) this method can take."})
    train_norms: bool = field(default=False, metadata={"help": "Also train the backbone's norm layers."})
    resolved_targets: list[str] = field(default_factory=list, metadata={
        "help": "Filled in by apply(); saved so a reload rebuilds exactly the same modules."})


class PeftMethod(TransferMethod):
    """A method that injects a PEFT tuner into ``model.backbone.model``; the head always trains."""

    saves_full_weights = False
    param_prefix: ClassVar[str]  # PEFT's name prefix of the added parameters (its ``BaseTuner.prefix``: "lora_")
    layer_types: ClassVar[tuple[type[nn.Module], ...]] = (nn.Linear, nn.Conv2d)
    can_merge: ClassVar[bool] = True
    config: PeftMethodConfig

    @abc.abstractmethod
    def peft_config(self, targets: list[str]) -> Any:
        """The PEFT config (``LoraConfig``, ``IA3Config``...) for the resolved target module names."""

    def accepts(self, module: nn.Module) -> bool:
        """Whether this tuner can wrap ``module`` (PEFT's layer types; grouped convs are left alone)."""
        return isinstance(module, self.layer_types) and getattr(module, "groups", 1) == 1

    # --- pre-flight and targets -----------------------------------------------------------------------------------

    def check_backbone(self, model: AutoTransfer) -> None:
        self.resolve_targets(model)

    def resolve_targets(self, model: AutoTransfer) -> list[str]:
        """Full module names to adapt; a clear :class:`ConfigurationError` when there are none."""
        cfg = self.config
        if cfg.resolved_targets:
            return list(cfg.resolved_targets)
        inner = model.backbone.base_model()
        modules = dict(inner.named_modules())
        wanted = cfg.target_modules
        if wanted is None:
            names = default_target_modules(inner, family_key(model), accepts=self.accepts)
        elif isinstance(wanted, str):
            names = [n for n in modules if re.fullmatch(wanted, n)]
        else:
            names = [n for n in modules if any(n == w or n.endswith("." + w) for w in wanted)]
        refused = [n for n in names if not self.accepts(modules[n])]
        if refused and wanted is not None:
            raise ConfigurationError(
                f"{self.name} target_modules={wanted!r} selects modules {self.name} cannot adapt: "
                f"{_describe(refused, modules)}. {self.name} adapts {self.supported_backbones}. Pick other "
                "target_modules or leave them unset."
            )
        if not names:
            if wanted is None:
                found = sorted({type(m).__name__ for m in modules.values() if isinstance(m, (nn.Linear, nn.Conv2d))})
                raise ConfigurationError(
                    f"method {self.name!r} cannot act on backbone {model.backbone.spec.name!r}: {self.name} adapts "
                    f"{self.supported_backbones}, and this backbone's blocks have none it can take (layer types "
                    f"found: {found or 'none'}). Methods that work on this backbone: "
                    f"{', '.join(working_methods(model, exclude=self.name)) or 'full, linear_probe'}."
                )
            sample = [n for n, m in modules.items() if self.accepts(m)][:10]
            raise ConfigurationError(
                f"{self.name} target_modules={wanted!r} matched no module of this backbone. Examples of modules "
                f"{self.name} can adapt: {sample}. Pass names (suffix match) or a regex on full module names."
            )
        return names

    # --- the TransferMethod interface -----------------------------------------------------------------------------

    def apply(self, model: AutoTransfer) -> None:
        from peft import get_peft_model  # heavy: loaded only when used

        cfg = self.config
        cfg.resolved_targets = self.resolve_targets(model)
        with warnings.catch_warnings():
            # peft probes the deprecated `is_gradient_checkpointing` of transformers >= 5 models; not the user's issue.
            warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated",
                                    category=FutureWarning)
            model.backbone.model = get_peft_model(model.backbone.model,
                                                  self.peft_config(list(cfg.resolved_targets)))
        self.set_trainable(model)

    def is_trained_parameter(self, name: str) -> bool:
        if name.startswith(HEAD_PREFIX) or f".{self.param_prefix}" in name:
            return True
        return self.config.train_norms and is_norm_param(name)

    def merge(self, model: AutoTransfer) -> bool:
        from peft import PeftModel  # heavy: loaded only when used

        if not isinstance(model.backbone.model, PeftModel):
            return False
        if not self.can_merge:
            raise ConfigurationError(f"method {self.name!r} cannot be merged into plain weights by PEFT "
                                     f"{_peft_version()}. Push or save it unmerged.")
        model.backbone.model = model.backbone.model.merge_and_unload()
        return True


def family_key(model: AutoTransfer) -> str:
    """The timm architecture or transformers ``model_type`` (what backbones/architectures.py model_types match)."""
    spec = model.backbone.spec
    if spec.family == "timm":
        return spec.options.get("architecture", "")
    return getattr(model.backbone.base_model().config, "model_type", "")


def is_norm_param(name: str) -> bool:
    """Whether ``name`` is a parameter of a norm layer (BatchNorm, LayerNorm, GroupNorm...)."""
    return bool(_NORM_RE.search(name))


def _describe(names: list[str], modules: dict[str, nn.Module]) -> str:
    shown = [f"{n} ({type(modules[n]).__name__})" for n in names[:5]]
    return ", ".join(shown) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _peft_version() -> str:
    import peft  # heavy: loaded only when used

    return peft.__version__
