"""Push an hftransfer model folder to the hub in one commit: safetensors only, a merged model card, no token anywhere.

:func:`push_folder` uploads a folder written by ``AutoTransfer.save_pretrained`` (or a training run's
``OUTPUT_DIR/model``); ``AutoTransfer.push_to_hub`` saves a live model into a temporary folder and calls it. Either
way there is exactly one hub commit, so a failed upload leaves the repo at its previous version and the local folder
untouched.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from hftransfer.errors import (
    ConfigurationError,
    ForeignFolderError,
    HFTransferError,
    UnsafeCheckpointError,
)
from hftransfer.hub.card_sections import has_sections
from hftransfer.hub.fetch import require_hub
from hftransfer.saved_format import BACKBONE_DIR, HFTRANSFER_CONFIG, WEIGHT_FILES, read_model_config
from hftransfer.utils.hub_ids import is_repo_id
from hftransfer.utils.io import PICKLE_SUFFIXES


if TYPE_CHECKING:
    from huggingface_hub import CommitInfo



logger = logging.getLogger(__name__)

README = "README.md"

# Top-level files that are uploaded; everything under backbone/ is uploaded too (pickles excepted, see below).
UPLOAD_PATTERNS = ("*.safetensors", "*.json", "*.md", "*.png", "vocab.txt", "merges.txt", "*.model", "*.tiktoken")
_COMMIT_ID_RE = re.compile(r"^[0-9a-f]{40}$")


class HubPushError(HFTransferError, OSError):
    """The hub refused or lost an upload. The commit was not made: the repo and the local folder are unchanged."""


@dataclass(frozen=True)
class PushPlan:
    """What :func:`push_folder` uploads from a validated folder."""

    folder: Path
    config: dict[str, Any]
    files: list[str]  # posix paths relative to ``folder``, sorted
    skipped: list[str]  # files present locally but not uploaded (logs, YAML, ...)


def plan_upload(folder: str | Path) -> PushPlan:
    """Validate an hftransfer model folder and list the files to upload.

    Raises:
        ForeignFolderError: ``folder`` is missing, not an hftransfer model, or incomplete.
        UnsafeCheckpointError: ``folder`` holds a pickle file (``.bin``, ``.pt``, ...), which is never uploaded.
        ConfigurationError: the folder holds only trained weights whose base backbone nobody else can fetch.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ForeignFolderError(
            f"folder={str(folder)!r} does not exist or is not a folder. Pass the folder written by "
            "model.save_pretrained(...) or a training run's output_dir/model."
        )
    config_path = folder / HFTRANSFER_CONFIG
    if not config_path.is_file():
        hint = ""
        if (folder / "model" / HFTRANSFER_CONFIG).is_file():
            hint = f" It looks like a training output_dir: push {str(folder / 'model')!r} instead."
        raise ForeignFolderError(
            f"folder={str(folder)!r} has no {HFTRANSFER_CONFIG}, so it is not a model saved by hftransfer.{hint} "
            "Save one with model.save_pretrained(folder) or train with `hftransfer train`."
        )
    config = read_model_config(folder, str(config_path), "Save the model again with model.save_pretrained(folder).")
    weights = config.get("weights")
    if weights not in WEIGHT_FILES:
        raise ForeignFolderError(
            f"{str(config_path)!r} has weights={weights!r}; expected one of {sorted(WEIGHT_FILES)}. Save the model "
            "again with model.save_pretrained(folder)."
        )
    if not (folder / WEIGHT_FILES[weights]).is_file():
        raise ForeignFolderError(
            f"folder={str(folder)!r} lacks {WEIGHT_FILES[weights]} (its config says weights={weights!r}); the save "
            "was incomplete. Save the model again with model.save_pretrained(folder)."
        )
    if weights == "full" and not (folder / BACKBONE_DIR).is_dir():
        raise ForeignFolderError(
            f"folder={str(folder)!r} lacks the {BACKBONE_DIR}/ architecture files needed to rebuild a full model; "
            "save the model again with model.save_pretrained(folder)."
        )
    backbone = config.get("backbone") or {}
    if weights == "trained" and backbone.get("source") not in ("hub", "packaged"):
        raise ConfigurationError(
            f"folder={str(folder)!r} holds only trained weights, but its base backbone {backbone.get('name')!r} "
            f"(source={backbone.get('source')!r}) cannot be fetched by anyone who pulls the repo. Save it with "
            "model.save_pretrained(folder, full_weights=True) and push again."
        )

    files, skipped, pickles = [], [], []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if path.suffix.lower() in PICKLE_SUFFIXES:
            pickles.append(rel)
        elif any(part.startswith(".") for part in PurePosixPath(rel).parts):
            skipped.append(rel)  # .cache/, .gitattributes, editor files: never part of the model
        elif rel.startswith(f"{BACKBONE_DIR}/") or ("/" not in rel and _matches(rel, UPLOAD_PATTERNS)):
            files.append(rel)
        else:
            skipped.append(rel)
    if pickles:
        raise UnsafeCheckpointError(
            f"folder={str(folder)!r} holds pickle file(s) {pickles}. hftransfer uploads safetensors only, because "
            "loading a pickle can run arbitrary code on the puller's machine. Delete them (or convert them with "
            "safetensors.torch.save_file) and push again."
        )
    return PushPlan(folder=folder, config=config, files=files, skipped=skipped)


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    commit_description: str | None = None,
    token: str | bool | None = None,
    create_repo: bool = True,
) -> CommitInfo:
    """Upload an hftransfer model folder to the hub in one commit.

    Uploaded: ``hftransfer_config.json``, the weights (``model.safetensors`` or ``adapter_model.safetensors``),
    ``backbone/``, the model card, images and tokenizer files. Never uploaded: pickles (refused), hidden files and
    anything else (logs, YAML; listed in a log message). When the repo already has a README.md, the local card's
    generated sections and metadata replace the remote ones and the user's own text, metadata and tags are kept.
    Weight and ``backbone/`` files of a previous push that this folder no longer has are deleted in the same commit.

    Args:
        folder (`str` or `Path`): Written by `AutoTransfer.save_pretrained` (or a training run's `output_dir/model`).
        repo_id (`str`): `namespace/name` (or `name` for the token's user).
        private (`bool`, *optional*, defaults to `False`): Create the repo as private (an existing repo keeps its
            visibility).
        revision (`str`, *optional*): Branch to commit to; created from `main` when missing. Defaults to `main`.
        commit_message / commit_description (`str`, *optional*): Defaults describe the model.
        token (`str` or `bool`, *optional*): Hub token; defaults to `HF_TOKEN` or the cached login. It is only sent
            to the hub, never written to a file, a card or a log.
        create_repo (`bool`, *optional*, defaults to `True`): Create the repo when it does not exist.

    Returns:
        `huggingface_hub.CommitInfo`: A `str` (the commit URL) with `.oid` (the commit id) and `.repo_url`.

    Example:

    ```py
    >>> from hftransfer.hub import push_folder
    >>> push_folder("outputs/digits/model", "me/digits-lite0", private=True, revision="v1")
    ```
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi  # heavy: huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError  # heavy: huggingface_hub

    plan = plan_upload(folder)
    repo_id = _check_repo_id(repo_id)
    branch = _check_branch(revision)
    _check_online(repo_id)

    api = HfApi(token=token)
    where = f"{repo_id}@{branch}"
    try:
        if create_repo:
            repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
            where = f"{repo_id}@{branch}"
        if private and not api.repo_info(repo_id).private:
            logger.warning("%s already exists and is public: private=True does not change an existing repo; "
                           "change its visibility in the repo settings (HfApi().update_repo_settings(private=True)).",
                           repo_id)
        if branch != "main":
            api.create_branch(repo_id, branch=branch, exist_ok=True)
        head = api.repo_info(repo_id, revision=branch).sha
        remote_files = api.list_repo_files(repo_id, revision=head)
        existing_card = None
        if README in remote_files:
            try:
                existing_card = Path(api.hf_hub_download(repo_id, README, revision=head)).read_text(encoding="utf-8")
            except EntryNotFoundError:
                existing_card = None
    except RepositoryNotFoundError as err:
        raise HubPushError(
            f"repo_id={repo_id!r} was not found on the hub, or the token cannot see it"
            + ("" if create_repo else " (create_repo=False: create it first, or pass create_repo=True)")
            + "."
        ) from err
    except OSError as err:  # HTTP errors (401, 403, ...) and lost connections
        raise HubPushError(f"Preparing the push to {where} failed: {err}. Nothing was uploaded.") from err

    _warn_unreachable_base(api, plan.config)
    card_text = _card_for_upload(plan, existing_card, repo_id)
    _refuse_token_in_files(plan, card_text, token)

    operations: list[Any] = [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(plan.folder / rel))
                             for rel in plan.files if rel != README]
    operations.append(CommitOperationAdd(path_in_repo=README, path_or_fileobj=card_text.encode("utf-8")))
    uploaded = {*plan.files, README}
    stale = [f for f in remote_files if f not in uploaded
             and (f in WEIGHT_FILES.values() or f.startswith(f"{BACKBONE_DIR}/"))]
    operations += [CommitOperationDelete(path_in_repo=f) for f in stale]

    method = (plan.config.get("method") or {}).get("name", "model")
    base = plan.config.get("backbone") or {}
    message = commit_message or f"Upload hftransfer {method} model ({plan.config['weights']} weights)"
    description = commit_description
    if description is None:
        description = f"Base backbone: {base.get('name')}" + (f" @ {base['revision']}" if base.get("revision") else "")
    try:
        info = api.create_commit(repo_id, operations, commit_message=message, commit_description=description,
                                 revision=branch, parent_commit=head)
    except Exception as err:  # HTTP errors, failed/dropped LFS uploads (RuntimeError), protocol errors
        raise HubPushError(
            f"Pushing {str(plan.folder)!r} to {where} failed: {type(err).__name__}: {err}. A hub commit is "
            "all-or-nothing, so the repo still holds its previous version, and the local folder is unchanged: run "
            "the same push again to retry."
        ) from err
    if plan.skipped:
        logger.info("Not uploaded (not part of an hftransfer model): %s", ", ".join(plan.skipped))
    logger.info("Pushed %s to %s in commit %s", plan.folder, where, info.oid)
    return info


# --- helpers ---------------------------------------------------------------------------------------------------------


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in patterns)


def _check_repo_id(repo_id: str) -> str:
    if not is_repo_id(repo_id):
        raise ConfigurationError(
            f"repo_id={repo_id!r} is not a hub repo id; use 'namespace/name' (letters, digits, '-', '_', '.'), e.g. "
            "'my-user/digits-lora'."
        )
    return repo_id


def _check_branch(revision: str | None) -> str:
    if revision is None or revision == "":
        return "main"
    if not isinstance(revision, str) or _COMMIT_ID_RE.match(revision) or revision.startswith("refs/"):
        raise ConfigurationError(
            f"revision={revision!r} cannot be pushed to: pass a branch name (created from main when missing), not a "
            "commit id or a ref path."
        )
    return revision


def check_push_target(repo_id: str, revision: str | None = None) -> None:
    """Fail now (before a long training run) if a push to ``repo_id@revision`` is bound to fail: bad id or branch,
    or the hub offline. Whether the token may write there is only known when pushing."""
    _check_online(_check_repo_id(repo_id))
    _check_branch(revision)


def _check_online(repo_id: str) -> None:
    require_hub(f"Cannot push to {repo_id!r}", "Unset it (or set HF_HUB_OFFLINE=0) to upload; the model folder is "
                "unchanged.", "Check the network or HF_ENDPOINT and push again; the model folder is unchanged.")


def _card_for_upload(plan: PushPlan, existing: str | None, repo_id: str) -> str:
    """The README to upload: the local card merged into the remote one, so the user's edits there survive."""
    from huggingface_hub import ModelCard  # heavy: huggingface_hub

    from hftransfer.hub.card import card_from_config, merge_cards  # heavy: hub.card imports huggingface_hub

    local_path = plan.folder / README
    local = local_path.read_text(encoding="utf-8") if local_path.is_file() else card_from_config(plan.config, repo_id)
    if existing is None or not has_sections(local):
        # No remote card, or a hand-written local card the user wants as is.
        return local
    return str(merge_cards(existing, ModelCard(local, ignore_metadata_errors=True)).content)


def _refuse_token_in_files(plan: PushPlan, card_text: str, token: str | bool | None) -> None:
    """Last line of defence: refuse to upload a text file (or card) that contains the hub token."""
    from huggingface_hub import get_token  # heavy: huggingface_hub

    secret = token if isinstance(token, str) else (get_token() if token is not False else None)
    if not secret or len(secret) < 8:
        return
    leaks = [README] if secret in card_text else []
    for rel in plan.files:
        if rel != README and not rel.endswith(".safetensors") and secret in (plan.folder / rel).read_text(
            encoding="utf-8", errors="ignore"
        ):
            leaks.append(rel)
    if leaks:
        raise ConfigurationError(
            f"Refusing to push {str(plan.folder)!r}: {leaks} contain(s) your hub token. Remove it from these files "
            "(and revoke the token if it was shared) before pushing."
        )


def _warn_unreachable_base(api: Any, config: dict[str, Any]) -> None:
    """An adapter-only repo is useless when its base backbone cannot be fetched from this hub."""
    backbone = config.get("backbone") or {}
    if config.get("weights") != "trained" or backbone.get("source") != "hub":
        return
    base = str(backbone.get("name", "")).removeprefix("hf-hub:")
    try:
        found = api.revision_exists(base, backbone.get("revision") or "main")
    except Exception:  # an unexpected answer is no reason to block the push
        return
    if not found:
        logger.warning(
            "The base backbone %r (revision %s) named by this adapter-only model was not found on this hub: pulls "
            "will fail until it is available. Push full weights instead (full_weights=True or merge=True).",
            base, backbone.get("revision"),
        )
