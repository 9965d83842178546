"""timm backbones: any ``timm.create_model`` architecture, from the hub, a local folder or random init."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from hftransfer.backbones.base import Backbone, BackboneSpec, PretrainedHead
from hftransfer.backbones.timm_tokens import TimmViTTokens, is_timm_vit
from hftransfer.backbones.tokens import TokenInterface
from hftransfer.errors import ModelNameError
from hftransfer.preprocessing import ImagePreprocessor
from hftransfer.utils.io import read_json, write_json


ARCHITECTURE_FILE = "timm_config.json"


class TimmBackbone(Backbone):
    """Wraps a timm model created with ``num_classes=0`` so ``model(pixel_values)`` returns pooled features."""

    family = "timm"
    input_names = ("pixel_values",)

    def __init__(self, model: nn.Module, spec: BackboneSpec, data_config: dict[str, Any] | None = None):
        import timm.data  # heavy: loaded only when used

        data_config = data_config or timm.data.resolve_model_data_config(model)
        super().__init__(model, spec, "image", model.num_features, ImagePreprocessor(data_config))
        self.spec.options.setdefault("architecture", _architecture_of(model))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.token_hook is not None:
            return self.forward_tokens({"pixel_values": pixel_values})
        return self.model(pixel_values)

    def token_interface(self) -> TokenInterface | None:
        return TimmViTTokens(self) if is_timm_vit(self.base_model()) else None

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.base_model().set_grad_checkpointing(enable)

    def save_architecture(self, directory: Path) -> None:
        write_json(Path(directory) / ARCHITECTURE_FILE, {
            "architecture": self.spec.options["architecture"],
            "model_args": self.spec.options.get("model_args", {}),
            "data_config": self.preprocessor.to_dict()["data_config"],
        })

    @classmethod
    def from_architecture(cls, directory: Path, spec: BackboneSpec, trust_remote_code: bool = False) -> TimmBackbone:
        import timm  # heavy: loaded only when used

        cfg = read_json(Path(directory) / ARCHITECTURE_FILE)
        # model_args copied from a hub config.json (timm.models.save_for_hf) carry the pretrained num_classes.
        model_args = {k: v for k, v in cfg.get("model_args", {}).items() if k != "num_classes"}
        model = timm.create_model(cfg["architecture"], pretrained=False, num_classes=0, **model_args)
        return cls(model, spec, data_config=cfg.get("data_config"))

    # --- constructors --------------------------------------------------------------------------------------------

    @classmethod
    def from_model(cls, model: nn.Module, spec: BackboneSpec, keep_head: bool = True,
                   label_names: list[str] | None = None, data_config: dict[str, Any] | None = None) -> TimmBackbone:
        """Adopt a timm model that still has its classifier: keep that classifier aside, then remove it."""
        import timm.data  # heavy: loaded only when used

        data_config = data_config or timm.data.resolve_model_data_config(model)
        head = _extract_linear_head(model, label_names) if keep_head else None
        model.reset_classifier(0)
        backbone = cls(model, spec, data_config=data_config)
        backbone.pretrained_head = head
        return backbone

    @classmethod
    def from_local_dir(cls, directory: Path, spec: BackboneSpec,
                       model_args: dict[str, Any] | None = None) -> TimmBackbone:
        """Load a folder written by ``timm.models.save_for_hf`` (config.json + model.safetensors)."""
        import timm  # heavy: loaded only when used

        config = read_json(Path(directory) / "config.json")
        spec.options.setdefault("model_args", {**config.get("model_args", {}), **(model_args or {})})
        model = timm.create_model(f"local-dir:{directory}", pretrained=True, **(model_args or {}))
        label_names = config.get("label_names") or imagenet_names(config.get("num_classes"))
        return cls.from_model(model, spec, label_names=label_names)

    @classmethod
    def from_architecture_name(cls, name: str, spec: BackboneSpec, model_args: dict[str, Any] | None = None
                               ) -> TimmBackbone:
        """Random init from a registered architecture (``pretrained=False``)."""
        import timm  # heavy: loaded only when used

        if not timm.is_model(name):
            raise ModelNameError(f"model_name={name!r} is not a timm architecture. See timm.list_models().")
        spec.options.setdefault("model_args", dict(model_args or {}))
        model = timm.create_model(name, pretrained=False, **(model_args or {}))
        return cls.from_model(model, spec, keep_head=False)


def pretrained_hub_id(architecture: str) -> str:
    """The hub repo holding the default pretrained weights of a timm architecture (``resnet50`` -> ``timm/...``)."""
    import timm  # heavy: loaded only when used
    from timm.models import get_pretrained_cfg  # heavy: loaded only when used

    arch, tag = timm.models.split_model_name_tag(architecture)
    cfg = get_pretrained_cfg(architecture) or get_pretrained_cfg(arch)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub_id:
        raise ModelNameError(
            f"timm architecture {architecture!r} has no pretrained weights on the hub. Pass pretrained=False for a "
            "random init, or choose a name from timm.list_models(pretrained=True)."
        )
    return hub_id


def _architecture_of(model: nn.Module) -> str:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return cfg.get("architecture") or type(model).__name__.lower()


def _extract_linear_head(model: nn.Module, label_names: list[str] | None) -> PretrainedHead | None:
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    if isinstance(classifier, nn.Linear) and classifier.out_features > 0:
        bias = classifier.bias.detach().clone() if classifier.bias is not None else None
        names = label_names if label_names and len(label_names) == classifier.out_features else None
        return PretrainedHead(classifier.weight.detach().clone(), bias, names)
    return None


def imagenet_names(num_classes: int | None) -> list[str] | None:
    """Short ImageNet-1k class names for a 1000-class timm head, else None."""
    if num_classes != 1000:
        return None
    from timm.data import ImageNetInfo  # heavy: loaded only when used

    info = ImageNetInfo()
    return [info.index_to_description(i).split(",")[0] for i in range(1000)]
