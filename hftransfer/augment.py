"""Image augmentation presets (a registry: one name -> one transform builder)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hftransfer.errors import ConfigurationError


AUGMENTATION_PRESETS: dict[str, Callable[[dict[str, Any]], Any]] = {}


def register_augmentation(name: str):
    """Decorator registering an augmentation preset builder ``fn(data_config) -> transform``; names are unique."""

    def wrap(fn):
        if name in AUGMENTATION_PRESETS:
            raise ConfigurationError(
                f"Augmentation preset {name!r} is already registered by {AUGMENTATION_PRESETS[name].__module__}; "
                "pick another name."
            )
        AUGMENTATION_PRESETS[name] = fn
        return fn

    return wrap


def _eval_transform(cfg: dict[str, Any]):
    from timm.data import create_transform  # heavy: timm.data, ~2.5 s

    return create_transform(input_size=cfg["input_size"], is_training=False, interpolation=cfg["interpolation"],
                            mean=cfg["mean"], std=cfg["std"], crop_pct=cfg["crop_pct"],
                            crop_mode=cfg.get("crop_mode", "center"))


@register_augmentation("none")
def _none(cfg: dict[str, Any]):
    """No augmentation: the deterministic evaluation transform (lets linear probing cache features)."""
    return _eval_transform(cfg)


RANDAUGMENT = "rand-m9-mstd0.5"  # timm's RandAugment policy of the randaugment presets
# Orientation-sensitive images (digits, characters, documents, road signs): a flip or a crop of 8% of the image
# changes or removes the class, so the upright presets keep >= 50% of the image and never flip.
UPRIGHT_CROP_SCALE = (0.5, 1.0)


def _train_transform(cfg: dict[str, Any], **options: Any):
    """timm's training transform (random-resized-crop, then ``options``) with the backbone's normalisation."""
    from timm.data import create_transform  # heavy: timm.data, ~2.5 s

    return create_transform(input_size=cfg["input_size"], is_training=True, interpolation=cfg["interpolation"],
                            mean=cfg["mean"], std=cfg["std"], color_jitter=None, **options)


@register_augmentation("default")
def _default(cfg: dict[str, Any]):
    """Random-resized-crop + horizontal flip (the classic transfer-learning recipe)."""
    return _train_transform(cfg, hflip=0.5, auto_augment=None)


@register_augmentation("randaugment")
def _randaugment(cfg: dict[str, Any]):
    """Random-resized-crop + flip + RandAugment (timm ``rand-m9-mstd0.5``)."""
    return _train_transform(cfg, hflip=0.5, auto_augment=RANDAUGMENT)


@register_augmentation("upright")
def _upright(cfg: dict[str, Any]):
    """Random-resized-crop of 50-100% of the image, no flip (digits, text, signs: orientation carries the class)."""
    return _train_transform(cfg, scale=UPRIGHT_CROP_SCALE, hflip=0.0, auto_augment=None)


@register_augmentation("randaugment_upright")
def _randaugment_upright(cfg: dict[str, Any]):
    """``upright`` + RandAugment: the strong view of self-training on digits-like images."""
    return _train_transform(cfg, scale=UPRIGHT_CROP_SCALE, hflip=0.0, auto_augment=RANDAUGMENT)


def build_image_transform(cfg: dict[str, Any], train: bool, augment: str | None = "default"):
    if not train:
        return _eval_transform(cfg)
    name = augment or "none"
    if name not in AUGMENTATION_PRESETS:
        raise ConfigurationError(
            f"augment={name!r} is not a known preset; choose one of {sorted(AUGMENTATION_PRESETS)}."
        )
    return AUGMENTATION_PRESETS[name](cfg)


def is_deterministic(augment: str | None) -> bool:
    """True when the training transform is the evaluation transform (so features can be cached)."""
    return augment in (None, "none")
