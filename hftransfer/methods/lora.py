"""``lora``: low-rank adapters (LoRA, optionally DoRA) injected with PEFT into the backbone; the head trains too."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from hftransfer.errors import ConfigurationError
from hftransfer.methods.base import MethodConfig, TransferMethod
from hftransfer.methods.registry import register_method
from hftransfer.methods.targets import default_target_modules
from hftransfer.saved_format import HEAD_PREFIX


@dataclass
class LoraMethodConfig(MethodConfig):
    r: int = field(default=8, metadata={"help": "Rank of the update matrices."})
    alpha: float = field(default=16, metadata={"help": "Scaling: the update is multiplied by alpha / r."})
    dropout: float = field(default=0.0, metadata={"help": "Dropout on the adapter input, in [0, 1)."})
    target_modules: list[str] | str | None = field(
        default=None,
        metadata={"help": "Module names (suffix match) or one regex on full names; None: the backbone's block layers "
                          "(see methods/targets.py)."},
    )
    use_dora: bool = field(default=False, metadata={"help": "Weight-decomposed LoRA (DoRA)."})
    use_rslora: bool = field(default=False, metadata={"help": "Rank-stabilised scaling alpha / sqrt(r)."})
    train_norms: bool = field(
        default=False, metadata={"help": "Also train the backbone's norm layers (cheap, often helps CNNs)."}
    )
    resolved_targets: list[str] = field(
        default_factory=list, metadata={"help": "Filled in by apply() and saved, for exact rebuilds; leave empty."}
    )

    def __post_init__(self):
        targets = self.target_modules
        rules = {
            "r": (isinstance(self.r, int) and not isinstance(self.r, bool) and self.r >= 1,
                  "use a rank >= 1 (e.g. 8)."),
            "alpha": (isinstance(self.alpha, (int, float)) and self.alpha > 0, "use a scaling > 0 (e.g. 16)."),
            "dropout": (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0,
                        "use a dropout probability in [0, 1)."),
            "target_modules": (targets is None or isinstance(targets, str)
                               or (isinstance(targets, list) and all(isinstance(t, str) for t in targets)),
                               "use a list of module names, one regex, or null for the default."),
        }
        for name, (ok, fix) in rules.items():
            if not ok:
                raise ConfigurationError(f"method.{name}={getattr(self, name)!r} is invalid for lora: {fix}")


@register_method("lora", LoraMethodConfig)
class Lora(TransferMethod):
    """LoRA through PEFT on timm and transformers backbones (Linear and Conv2d layers), DoRA optional."""

    saves_full_weights = False
    config: LoraMethodConfig

    def apply(self, model) -> None:
        from peft import LoraConfig, get_peft_model

        cfg = self.config
        inner = model.backbone.model
        if not cfg.resolved_targets:
            cfg.resolved_targets = self._targets(model)
        peft_config = LoraConfig(
            r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=list(cfg.resolved_targets),
            use_dora=cfg.use_dora, use_rslora=cfg.use_rslora, bias="none",
        )
        with warnings.catch_warnings():
            # peft probes the deprecated `is_gradient_checkpointing` of transformers >= 5 models; not the user's issue.
            warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated",
                                    category=FutureWarning)
            model.backbone.model = get_peft_model(inner, peft_config)
        self.set_trainable(model)

    def _targets(self, model) -> list[str]:
        import re

        inner = model.backbone.model
        names = [n for n, _ in inner.named_modules()]
        wanted = self.config.target_modules
        if wanted is None:
            targets = default_target_modules(inner, _family_key(model))
        elif isinstance(wanted, str):
            targets = [n for n in names if re.fullmatch(wanted, n)]
        else:
            targets = [n for n in names if any(n == w or n.endswith("." + w) for w in wanted)]
        if not targets:
            sample = [n for n, m in inner.named_modules() if type(m).__name__ in ("Linear", "Conv2d")][:10]
            raise ConfigurationError(
                f"lora target_modules={wanted!r} matched no module of this backbone. Examples of Linear/Conv2d "
                f"modules: {sample}. Pass names (suffix match) or a regex on full module names."
            )
        return targets

    def is_trained_parameter(self, name: str) -> bool:
        if name.startswith(HEAD_PREFIX):
            return True
        if "lora_" in name:
            return True
        return self.config.train_norms and _is_norm_param(name)

    def merge(self, model) -> bool:
        from peft import PeftModel

        if isinstance(model.backbone.model, PeftModel):
            model.backbone.model = model.backbone.model.merge_and_unload()
            return True
        return False


def _family_key(model) -> str:
    spec = model.backbone.spec
    if spec.family == "timm":
        return spec.options.get("architecture", "")
    return getattr(model.backbone.model.config, "model_type", "")


def _is_norm_param(name: str) -> bool:
    import re

    return bool(re.search(r"(^|\.)(norm\d*|bn\d*|LayerNorm|layernorm|ln_\w+|_bn\d+)\.", name))
