"""Name -> backbone source. Explicit prefixes first, then folders, timm architectures and hub ids.

Each rule is one small function in ``PREFIX_RULES`` or the ordered fallback chain in :func:`resolve_name`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from hftransfer.errors import ACCEPTED_MODEL_FORMS, ForeignFolderError, ModelNameError, OfflineError
from hftransfer.hub.fetch import fetch_file
from hftransfer.saved_format import HFTRANSFER_CONFIG
from hftransfer.utils.hub_ids import is_repo_id
from hftransfer.utils.io import PICKLE_SUFFIXES, read_json


@dataclass(frozen=True)
class ResolvedName:
    """What a model name points at."""

    kind: str  # "hftransfer" | "timm" | "transformers" | "packaged"
    source: str  # "local" | "hub" | "architecture" | "packaged"
    location: str  # folder, hub repo id, timm architecture or packaged name


def _looks_like_path(name: str) -> bool:
    return name.startswith(("./", "../", "/", "~", ".\\")) or os.sep in name and Path(name).exists()


def classify_folder(folder: Path, name: str) -> ResolvedName:
    """Tell an hftransfer / timm / transformers folder apart; anything else is a clear error."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ModelNameError(f"model_name={name!r} is not an existing folder.\n{ACCEPTED_MODEL_FORMS}")
    if (folder / HFTRANSFER_CONFIG).is_file():
        return ResolvedName("hftransfer", "local", str(folder))
    files = sorted(p.name for p in folder.iterdir())
    if (folder / "adapter_config.json").is_file():
        raise ForeignFolderError(
            f"{name!r} holds a PEFT adapter (adapter_config.json) saved by another tool, not an hftransfer model. "
            "Load its base model with AutoTransfer.from_pretrained(<base>) and apply the adapter with the 'lora' "
            "recipe, or save it with hftransfer."
        )
    if (folder / "config.json").is_file():
        config = read_json(folder / "config.json")
        if "architecture" in config and config.get("model_type") in (None, "timm_wrapper"):
            return ResolvedName("timm", "local", str(folder))
        if "model_type" in config:
            return ResolvedName("transformers", "local", str(folder))
    only_pickle = [f for f in files if f.endswith(PICKLE_SUFFIXES)]
    hint = (" It holds only pickle weights (" + ", ".join(only_pickle) + "): convert them to safetensors and add a "
            "config.json." if only_pickle else "")
    raise ForeignFolderError(
        f"{name!r} is not a model folder hftransfer can load: it has no hftransfer_config.json, no timm config.json "
        f"(with 'architecture') and no transformers config.json (with 'model_type'). Found: {files[:12]}.{hint}"
    )


def _prefixed_local_dir(rest: str) -> ResolvedName:
    resolved = classify_folder(Path(rest), f"local-dir:{rest}")
    if resolved.kind != "timm":
        raise ModelNameError(f"'local-dir:{rest}' must be a timm folder (config.json with 'architecture').")
    return resolved


def _prefixed_transformers(rest: str) -> ResolvedName:
    if Path(rest).expanduser().is_dir():
        return ResolvedName("transformers", "local", str(Path(rest).expanduser()))
    return ResolvedName("transformers", "hub", rest)


def _prefixed_timm(rest: str) -> ResolvedName:
    import timm  # heavy: loaded only when used

    if not timm.is_model(rest):
        raise ModelNameError(f"'timm:{rest}' is not a timm architecture; see timm.list_models('{rest[:6]}*').")
    return ResolvedName("timm", "architecture", rest)


PREFIX_RULES = {
    "packaged:": lambda rest: ResolvedName("packaged", "packaged", rest),
    "timm:": _prefixed_timm,
    "hf-hub:": lambda rest: ResolvedName("timm", "hub", rest),
    "local-dir:": _prefixed_local_dir,
    "transformers:": _prefixed_transformers,
}


def resolve_name(name: str, revision: str | None = None, token: str | bool | None = None) -> ResolvedName:
    """Decide what ``name`` refers to. Raises with the accepted forms when it is unknown or ambiguous."""
    if not isinstance(name, (str, os.PathLike)) or not str(name).strip():
        raise ModelNameError(f"model_name must be a non-empty string; received {name!r}.\n{ACCEPTED_MODEL_FORMS}")
    name = os.fspath(name).strip()
    for prefix, rule in PREFIX_RULES.items():
        if name.startswith(prefix):
            return rule(name[len(prefix):])
    if _looks_like_path(name):
        return classify_folder(Path(name), name)

    import timm  # heavy: loaded only when used

    is_timm_arch = timm.is_model(name)
    if Path(name).is_dir():
        if is_timm_arch:
            raise ModelNameError(
                f"model_name={name!r} is ambiguous: it is both a local folder and a timm architecture. Write "
                f"'./{name}' for the folder or 'timm:{name}' for the architecture."
            )
        return classify_folder(Path(name), name)
    if name.startswith("timm/"):
        return ResolvedName("timm", "hub", name)
    if is_timm_arch:
        return ResolvedName("timm", "architecture", name)
    if is_repo_id(name):
        return _resolve_hub_repo(name, revision, token)
    raise ModelNameError(f"model_name={name!r} is not a known model.\n{ACCEPTED_MODEL_FORMS}")


def _resolve_hub_repo(repo_id: str, revision: str | None, token: str | bool | None) -> ResolvedName:
    """Read the repo's config files to tell an hftransfer, timm or transformers repo apart."""
    from huggingface_hub.errors import EntryNotFoundError  # heavy: loaded only when used


    try:
        for filename in (HFTRANSFER_CONFIG, "config.json"):
            try:
                path = fetch_file(repo_id, filename, revision=revision, token=token)
            except EntryNotFoundError:
                continue
            if filename == HFTRANSFER_CONFIG:
                return ResolvedName("hftransfer", "hub", repo_id)
            config = read_json(path)
            if "architecture" in config and config.get("model_type") in (None, "timm_wrapper"):
                return ResolvedName("timm", "hub", repo_id)
            if "model_type" in config:
                return ResolvedName("transformers", "hub", repo_id)
    except OfflineError as err:
        raise OfflineError(
            f"model_name={repo_id!r} is not a timm architecture or a local folder, so it would be a hub repo, but "
            f"{str(err)[0].lower()}{str(err)[1:]}\n{ACCEPTED_MODEL_FORMS}"
        ) from None
    raise ForeignFolderError(
        f"Hub repo {repo_id!r} has neither hftransfer_config.json nor a timm/transformers config.json, so it is not "
        "a model hftransfer can load."
    )
