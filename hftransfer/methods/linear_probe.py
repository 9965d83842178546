"""``linear_probe``: the backbone is frozen, only the head trains (features can be cached)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hftransfer.methods.base import MethodConfig, TransferMethod
from hftransfer.methods.registry import register_method
from hftransfer.saved_format import HEAD_PREFIX


FEATURE_PRECISIONS = ("auto", "bf16", "fp32")


@dataclass
class LinearProbeConfig(MethodConfig):
    cache_features: bool = field(
        default=True, metadata={"help": "Compute backbone features once and reuse them every epoch."}
    )
    cache_dir: str | None = field(
        default=None, metadata={"help": "None: keep the feature cache in memory; a folder: memory-map it from disk."}
    )
    feature_precision: str = field(default="auto", metadata={"help": (
        "Precision of the cached backbone features: 'auto' (bf16 where the device computes bf16 fast: CPUs with "
        "AMX / AVX-512 bf16, bf16 GPUs; otherwise the run's mixed_precision), 'bf16' or 'fp32'.")})

    def __post_init__(self):
        if self.feature_precision not in FEATURE_PRECISIONS:
            raise ValueError(f"linear_probe feature_precision={self.feature_precision!r} is invalid; choose one of "
                             f"{list(FEATURE_PRECISIONS)}.")


@register_method("linear_probe", LinearProbeConfig,
                 defaults={"optim": {"name": "adamw", "lr": 3e-3, "weight_decay": 1e-4}, "augment": "none"})
class LinearProbe(TransferMethod):
    """Linear probing: frozen backbone (eval mode), trainable head."""

    saves_full_weights = False
    trains_backbone = False

    @property
    def caches_features(self) -> bool:
        return self.config.cache_features

    def apply(self, model) -> None:
        self.set_trainable(model)

    def is_trained_parameter(self, name: str) -> bool:
        return name.startswith(HEAD_PREFIX)
