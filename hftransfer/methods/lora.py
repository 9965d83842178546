"""``lora``: low-rank adapters (LoRA, optionally DoRA) injected with PEFT into the backbone; the head trains too."""

from __future__ import annotations

from dataclasses import dataclass, field

from hftransfer.methods.base import MethodConfig, TransferMethod
from hftransfer.methods.registry import register_method
from hftransfer.methods.targets import default_target_modules
from hftransfer.saved_format import HEAD_PREFIX


@dataclass
class LoraMethodConfig(MethodConfig):
    r: int = 8  # rank of the update matrices
    alpha: int = 16  # scaling: the update is multiplied by alpha / r
    dropout: float = 0.0  # dropout on the adapter input
    target_modules: list[str] | str | None = None  # None: the backbone's block layers (see methods/targets.py)
    use_dora: bool = False  # weight-decomposed LoRA (DoRA)
    use_rslora: bool = False  # rank-stabilised scaling alpha / sqrt(r)
    train_norms: bool = False  # also train the backbone's norm layers (cheap, often helps CNNs)
    resolved_targets: list[str] = field(default_factory=list)  # filled in by apply(); saved for exact rebuilds

    def __post_init__(self):
        if self.r < 1:
            raise ValueError(f"lora r must be >= 1; received r={self.r}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lora dropout must be in [0, 1); received dropout={self.dropout}.")


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
            raise ValueError(
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
