"""Pull a model repo for offline use: the repo into a folder, the base backbone it needs into the hub cache.

Where the base goes: an adapter-only repo (LoRA etc. saved without the backbone) names its base backbone and exact
commit in ``hftransfer_config.json``. :func:`pull` downloads that base into the Hugging Face cache (``HF_HUB_CACHE``)
with the same calls ``AutoTransfer.from_pretrained`` makes, and leaves the pulled folder a byte-for-byte copy of the
repo. Offline, the recorded name and commit then resolve from the cache exactly as they did online: no rewritten
config, no relative path that breaks when the folder moves, the card's ``base_model`` stays true, the folder can be
pushed again as is, and several adapters of one base share one copy. The cost: the base lives in this machine's
cache; to move the model to another machine, copy the cache too, or push/save it with full weights (``merge=True``).
"""

from __future__ import annotations

import logging
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hftransfer.errors import (
    ConfigurationError,
    ForeignFolderError,
    HFTransferError,
    ModelNameError,
    OutputDirError,
    UnsafeCheckpointError,
)
from hftransfer.hub.fetch import (
    SAFE_PATTERNS,
    FetchedRepo,
    fetch_file,
    fetch_snapshot,
    not_found_message,
    require_hub,
)
from hftransfer.saved_format import BACKBONE_DIR, HFTRANSFER_CONFIG, WEIGHT_FILES, read_model_config
from hftransfer.utils.hub_ids import is_repo_id
from hftransfer.utils.io import PICKLE_SUFFIXES, atomic_directory, read_json


logger = logging.getLogger(__name__)

TRANSFORMERS_CONFIG = "config.json"  # a timm ("architecture") or transformers ("model_type") model's config
NEVER_PULLED = [f"*{suffix}" for suffix in PICKLE_SUFFIXES] + ["*.py"]


@dataclass(frozen=True)
class PullResult:
    """What :func:`pull` fetched."""

    repo_id: str
    revision: str  # the exact commit the folder holds
    local_dir: Path
    kind: str  # "hftransfer", "timm" or "transformers"
    files: dict[str, int] = field(default_factory=dict)  # posix path in local_dir -> bytes
    base_name: str | None = None  # the base backbone recorded by an adapter-only repo ("timm/...", "packaged:...")
    base: FetchedRepo | None = None  # its snapshot in the hub cache (None: no base needed, or a packaged one)

    def summary(self) -> str:
        """Files and sizes, the base model, and the commands that use the folder offline."""
        lines = [f"pulled {self.repo_id} @ {self.revision} ({self.kind} model) into {self.local_dir}"]
        width = max((len(name) for name in self.files), default=0)
        lines += [f"  {name:{width}s}  {_size(size):>9s}" for name, size in self.files.items()]
        lines.append(f"  {len(self.files)} files, {_size(sum(self.files.values()))}")
        if self.base is not None:
            base_bytes = sum(p.stat().st_size for p in self.base.local_dir.rglob("*") if p.is_file())
            lines.append(f"base backbone {self.base_name} @ {self.base.revision} ({_size(base_bytes)}) in the hub "
                         f"cache: {self.base.local_dir}")
        elif self.base_name is not None:
            lines.append(f"base backbone {self.base_name}: a packaged backbone, installed with pip (not downloaded)")
        else:
            lines.append("base backbone: none needed (the folder holds the full weights)")
        folder = _display_path(self.local_dir)
        if self.kind == "hftransfer":
            lines += ["use it offline:", f"  HF_HUB_OFFLINE=1 hftransfer predict {shlex.quote(folder)} INPUT...",
                      f"  AutoTransfer.from_pretrained({folder!r})  # with HF_HUB_OFFLINE=1"]
        else:  # a backbone: fine-tune it (a timm model with its ImageNet head also predicts as is)
            lines += ["use it offline (a backbone to fine-tune):",
                      f"  HF_HUB_OFFLINE=1 hftransfer train CONFIG model.name={shlex.quote(folder)}",
                      f"  AutoTransfer.from_pretrained({folder!r}, num_labels=N)  # with HF_HUB_OFFLINE=1"]
        return "\n".join(lines)


def pull(
    repo_id: str,
    local_dir: str | Path | None = None,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    overwrite: bool = False,
) -> PullResult:
    """Download a model repo into ``local_dir``, and the base backbone an adapter-only repo needs into the hub cache,
    so that ``AutoTransfer.from_pretrained(local_dir)`` works with no network (``HF_HUB_OFFLINE=1``).

    Safetensors only: pickle files (``.bin``, ``.pt``, ``.pth``, ``.pkl``, ...) and code (``.py``) are never
    downloaded, and nothing runs remote code. The repo is written into a temporary folder next to ``local_dir`` and
    renamed into place at the end, so an interrupted or failed pull leaves no ``local_dir`` (an existing one is left
    as it was). Why the base goes into the cache rather than into the folder: see this module's docstring.

    Args:
        repo_id (`str`): An hftransfer, timm or transformers model repo, `namespace/name`.
        local_dir (`str` or `Path`, *optional*): Where to write; defaults to a folder named after the repo
            (`name` of `namespace/name`) in the current directory. Must be missing or empty unless `overwrite`.
        revision (`str`, *optional*): Branch, tag or commit; defaults to `main`.
        token (`str` or `bool`, *optional*): Hub token; defaults to `HF_TOKEN` or the cached login. Only sent to the
            hub: never printed, logged or written.
        overwrite (`bool`, *optional*, defaults to `False`): Replace a non-empty `local_dir` (only once the new copy
            is complete).

    Returns:
        `PullResult`: the commit, the files and sizes, the base backbone; `.summary()` says how to use it offline.

    Example:

    ```py
    >>> import hftransfer
    >>> result = hftransfer.pull("me/digits-lora")       # ./digits-lora, plus its base backbone in the cache
    >>> print(result.summary())
    >>> # later, with HF_HUB_OFFLINE=1: AutoTransfer.from_pretrained("./digits-lora")
    ```
    """
    if not is_repo_id(repo_id):
        raise ConfigurationError(
            f"repo_id={repo_id!r} is not a hub repo id; pass 'namespace/name' (letters, digits, '-', '_', '.'), e.g. "
            "'my-user/digits-lora'."
        )
    target = _check_target(Path(local_dir) if local_dir is not None else Path.cwd() / repo_id.split("/")[-1],
                           overwrite)
    _check_online(repo_id)
    files, commit = _list_repo(repo_id, revision, token)
    with atomic_directory(target) as tmp:
        kind, config = _read_model_config(repo_id, commit, files, token, tmp)
        base_name, base = _fetch_base(repo_id, config, token) if kind == "hftransfer" else (None, None)
        _download(repo_id, commit, token, tmp, list(SAFE_PATTERNS))
        shutil.rmtree(tmp / ".cache", ignore_errors=True)  # huggingface_hub's download bookkeeping
        sizes = _local_files(tmp)
    result = PullResult(repo_id=repo_id, revision=commit, local_dir=target, kind=kind, files=sizes,
                        base_name=base_name, base=base)
    logger.info("Pulled %s@%s into %s (%d files)", repo_id, commit, target, len(sizes))
    return result


# --- steps -----------------------------------------------------------------------------------------------------------


def _check_target(target: Path, overwrite: bool) -> Path:
    target = target.expanduser()
    if target.exists() and not target.is_dir():
        raise OutputDirError(f"local_dir={str(target)!r} is a file; pass a folder path (missing or empty).")
    if target.is_dir() and any(target.iterdir()):
        if not overwrite:
            raise OutputDirError(
                f"local_dir={str(target)!r} is not empty. Pass another folder, or overwrite=True (--overwrite) to "
                "replace it once the new copy is complete."
            )
        if target.resolve() in (Path.cwd().resolve(), *Path.cwd().resolve().parents):
            raise OutputDirError(
                f"local_dir={str(target)!r} is the current directory (or one above it); --overwrite would replace "
                "it. Pass a sub-folder, e.g. the default (a folder named after the repo)."
            )
    return target


def _check_online(repo_id: str) -> None:
    require_hub(f"Cannot pull {repo_id!r}", "Pulling downloads from the hub: run it with HF_HUB_OFFLINE unset (or 0), "
                "then use the pulled folder offline.", "Check the network or HF_ENDPOINT and pull again.")


def _list_repo(repo_id: str, revision: str | None, token: str | bool | None) -> tuple[list[str], str]:
    """The repo's file names and the exact commit ``revision`` points at."""
    from huggingface_hub import HfApi  # heavy: huggingface_hub
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError  # heavy: huggingface_hub

    try:
        info = HfApi().model_info(repo_id, revision=revision, token=token)
    except RevisionNotFoundError as err:
        raise ModelNameError(
            f"revision={revision!r} does not exist in repository {repo_id!r}. Pass an existing branch, tag or commit "
            f"(list them with HfApi().list_repo_refs({repo_id!r})), or leave --revision out for 'main'."
        ) from err
    except RepositoryNotFoundError as err:
        raise ModelNameError(f"repo_id={repo_id!r}: {not_found_message(repo_id)}") from err
    return [s.rfilename for s in info.siblings or []], str(info.sha or revision)


def _read_model_config(repo_id: str, commit: str, files: list[str], token: str | bool | None,
                       tmp: Path) -> tuple[str, dict[str, Any]]:
    """Download only the config, and check the repo is a model hftransfer loads, before any weights."""
    where = f"repo_id={repo_id!r} (commit {commit[:12]})"
    weights = [f for f in files if f.endswith(".safetensors")]
    if HFTRANSFER_CONFIG in files:
        _download(repo_id, commit, token, tmp, [HFTRANSFER_CONFIG])
        config = read_model_config(tmp, repo_id, "Pull the backbone it was trained from by its own name instead.")
        needed = WEIGHT_FILES.get(config.get("weights"))
        if needed not in files:
            raise ForeignFolderError(
                f"{where} lacks {needed or 'its weights'} (its {HFTRANSFER_CONFIG} says weights="
                f"{config.get('weights')!r}); the push was incomplete. Push the model again, then pull."
            )
        if config["weights"] == "full" and not any(f.startswith(f"{BACKBONE_DIR}/") for f in files):
            raise ForeignFolderError(f"{where} lacks the {BACKBONE_DIR}/ architecture files of its full weights; "
                                     "push the model again, then pull.")
        return "hftransfer", config
    if TRANSFORMERS_CONFIG in files:
        _download(repo_id, commit, token, tmp, [TRANSFORMERS_CONFIG])
        config = read_json(tmp / TRANSFORMERS_CONFIG)
        if isinstance(config, dict) and ("architecture" in config or "model_type" in config):
            if config.get("auto_map"):
                raise ConfigurationError(
                    f"{where} needs its own modelling code (auto_map in config.json); hftransfer never downloads or "
                    "runs remote code. Pick a model transformers supports natively."
                )
            if not weights:
                _refuse_without_safetensors(where, files)
            return ("timm" if "architecture" in config else "transformers"), config
    raise ForeignFolderError(
        f"{where} is not an hftransfer, transformers or timm model: it has no {HFTRANSFER_CONFIG} and no "
        f"{TRANSFORMERS_CONFIG} with 'model_type' or 'architecture' (files: {files[:12]}). Check the repo id, or "
        "pass --revision for the branch that holds the model."
    )


def _refuse_without_safetensors(where: str, files: list[str]) -> None:
    pickles = [f for f in files if f.endswith(PICKLE_SUFFIXES)]
    if pickles:
        raise UnsafeCheckpointError(
            f"{where} has only pickle weights ({', '.join(pickles[:4])}); hftransfer pull downloads safetensors "
            "only, because unpickling can run arbitrary code. Ask the owner for safetensors weights, or convert "
            "them yourself (safetensors.torch.save_file) and push the converted model."
        )
    raise ForeignFolderError(f"{where} has a config but no weights (no .safetensors file); pick a repo with weights.")


def _fetch_base(repo_id: str, config: dict[str, Any],
                token: str | bool | None) -> tuple[str | None, FetchedRepo | None]:
    """The base backbone an adapter-only repo needs, into the hub cache, by the calls offline loading repeats."""
    if config.get("weights") != "trained":
        return None, None
    from huggingface_hub.errors import EntryNotFoundError  # heavy: huggingface_hub

    backbone = config.get("backbone") or {}
    name, revision, source = str(backbone.get("name")), backbone.get("revision"), backbone.get("source")
    if source == "packaged":
        return name, None
    if source != "hub":
        raise ConfigurationError(
            f"repo_id={repo_id!r} holds only trained weights, and its base backbone {name!r} (source={source!r}) "
            "is not on the hub, so it cannot be pulled. Ask the owner to push it with full weights (merge=True)."
        )
    base_id = name.removeprefix("hf-hub:")
    try:
        # Loading resolves the base's name from these two files (a miss is cached too), then fetches the snapshot.
        for filename in (HFTRANSFER_CONFIG, TRANSFORMERS_CONFIG):
            try:
                fetch_file(base_id, filename, revision=revision, token=token)
            except EntryNotFoundError:
                pass
        return name, fetch_snapshot(base_id, revision=revision, token=token)
    except HFTransferError as err:
        raise type(err)(
            f"repo_id={repo_id!r} holds only trained weights; its base backbone {name!r} (revision {revision!r}, "
            f"named in {HFTRANSFER_CONFIG}) could not be fetched: {err}\nNothing was written. Make the base available "
            "on this hub, or ask the owner to push the model with full weights (merge=True)."
        ) from err


def _download(repo_id: str, commit: str, token: str | bool | None, folder: Path, patterns: list[str]) -> None:
    from huggingface_hub import snapshot_download  # heavy: huggingface_hub

    snapshot_download(repo_id, revision=commit, local_dir=folder, allow_patterns=patterns,
                      ignore_patterns=NEVER_PULLED, token=token)


def _local_files(folder: Path) -> dict[str, int]:
    paths = sorted(p for p in folder.rglob("*") if p.is_file())
    pickles = [p.name for p in paths if p.suffix.lower() in PICKLE_SUFFIXES]
    if pickles:  # the patterns exclude them; this guards against a future pattern change
        raise UnsafeCheckpointError(f"Refusing to keep pickle files {pickles} from the pull; nothing was written.")
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in paths}


def _size(num_bytes: float) -> str:
    if num_bytes < 1000:
        return f"{num_bytes:.0f} B"
    for unit in ("kB", "MB", "GB"):
        num_bytes /= 1000
        if num_bytes < 1000 or unit == "GB":
            break
    return f"{num_bytes:.1f} {unit}"


def _display_path(path: Path) -> str:
    """A relative path as ``./name`` (so it is never read as a hub id or a timm name), else absolute."""
    try:
        return f"./{path.resolve().relative_to(Path.cwd().resolve()).as_posix()}"
    except ValueError:
        return str(path.resolve())
