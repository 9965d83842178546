"""Ready-to-use preprocessing callables: the transform a backbone expects, built from its own config."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


IMAGENET_DATA_CONFIG: dict[str, Any] = {
    "input_size": (3, 224, 224),
    "interpolation": "bicubic",
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
    "crop_pct": 0.875,
    "crop_mode": "center",
}


class ImagePreprocessor:
    """Turns PIL images into ``pixel_values`` the way the backbone was pretrained (timm data config format).

    ``augment`` names a training augmentation preset (see :data:`AUGMENTATION_PRESETS`); evaluation always uses the
    deterministic resize + center-crop transform.
    """

    modality = "image"

    def __init__(self, data_config: dict[str, Any]):
        cfg = dict(IMAGENET_DATA_CONFIG)
        cfg.update({k: v for k, v in data_config.items() if v is not None})
        cfg["input_size"] = tuple(cfg["input_size"])
        cfg["mean"], cfg["std"] = tuple(cfg["mean"]), tuple(cfg["std"])
        self.data_config = cfg

    @property
    def image_size(self) -> int:
        return int(self.data_config["input_size"][-1])

    def with_image_size(self, size: int) -> ImagePreprocessor:
        """A copy that produces ``size`` x ``size`` inputs (lower resolution trains faster on CPU)."""
        cfg = dict(self.data_config)
        cfg["input_size"] = (3, int(size), int(size))
        return ImagePreprocessor(cfg)

    def transform(self, train: bool = False, augment: str | None = "default"):
        """A per-image callable PIL.Image -> Tensor[3, H, W]."""
        from hftransfer.augment import build_image_transform  # heavy: timm transforms, kept out of import hftransfer

        return build_image_transform(self.data_config, train=train, augment=augment)

    def __call__(self, images: Any, train: bool = False) -> dict[str, torch.Tensor]:
        if not isinstance(images, (list, tuple)):
            images = [images]
        tf = self.transform(train=train)
        return {"pixel_values": torch.stack([tf(_to_rgb(img)) for img in images])}

    def to_dict(self) -> dict[str, Any]:
        return {"type": "image", "data_config": {k: list(v) if isinstance(v, tuple) else v
                                                 for k, v in self.data_config.items()}}


class TextPreprocessor:
    """Tokenizes text (or text pairs) with the backbone's tokenizer; pads to the longest in the batch."""

    modality = "text"

    def __init__(self, tokenizer: Any, max_length: int = 128):
        self.tokenizer = tokenizer
        self.max_length = int(max_length)

    def __call__(self, texts: str | Sequence[str], text_pair: Sequence[str] | None = None,
                 padding: bool | str = True) -> dict[str, torch.Tensor]:
        if isinstance(texts, str):
            texts = [texts]
        return dict(self.tokenizer(list(texts), text_pair=list(text_pair) if text_pair is not None else None,
                                   padding=padding, truncation=True, max_length=self.max_length,
                                   return_tensors="pt"))

    def to_dict(self) -> dict[str, Any]:
        return {"type": "text", "max_length": self.max_length}


def _to_rgb(img: Any):
    from PIL import Image  # heavy: PIL, kept out of import hftransfer

    if isinstance(img, Image.Image):
        return img if img.mode == "RGB" else img.convert("RGB")
    raise TypeError(f"images must be PIL.Image objects; received {type(img).__name__}. "
                    "Open files with PIL.Image.open(path) first.")


def _field(obj: Any, key: str) -> Any:
    """Read ``key`` from a dict or a transformers ``SizeDict``."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(key)
    return getattr(obj, key, None)


def data_config_from_image_processor(processor: Any) -> dict[str, Any]:
    """Translate a transformers image processor's size/crop/mean/std into a timm-style data config."""
    size, crop = getattr(processor, "size", None), getattr(processor, "crop_size", None)
    shortest = _field(size, "shortest_edge")
    side = _field(crop, "height") or _field(size, "height") or shortest or 224
    side = int(side)
    crop_pct = getattr(processor, "crop_pct", None) or (side / shortest if shortest and crop is not None else 1.0)
    resample = getattr(processor, "resample", None)
    interpolation = {0: "nearest", 2: "bilinear", 3: "bicubic"}.get(int(resample) if resample is not None else 2,
                                                                     "bilinear")
    return {
        "input_size": (3, side, side),
        "interpolation": interpolation,
        "mean": tuple(getattr(processor, "image_mean", None) or (0.5, 0.5, 0.5)),
        "std": tuple(getattr(processor, "image_std", None) or (0.5, 0.5, 0.5)),
        "crop_pct": min(float(crop_pct), 1.0),
        "crop_mode": "center",
    }
