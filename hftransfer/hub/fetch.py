"""Download repos from the hub the safe way: safetensors only, fail fast offline, record the exact revision."""

from __future__ import annotations

import functools
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from hftransfer.errors import ModelNameError, OfflineError, UnsafeCheckpointError
from hftransfer.utils.io import PICKLE_SUFFIXES, pickle_refusal_message


# Files a backbone or an hftransfer model needs; weights are filtered separately (safetensors first).
_META_PATTERNS = ["*.json", "*.txt", "*.model", "*.md", "*.yaml", "*.png", "merges.txt", "vocab.*", "*.tiktoken"]
SAFE_PATTERNS = (*_META_PATTERNS, "*.safetensors")  # a snapshot without pickles or code (what loading downloads)
_COMMIT_RE = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class FetchedRepo:
    """A local snapshot of a hub repo."""

    repo_id: str
    local_dir: Path
    revision: str | None  # the exact commit id the snapshot came from (None when unknown)


def hub_offline_forced() -> bool:
    from huggingface_hub import constants  # heavy: huggingface_hub

    return bool(constants.HF_HUB_OFFLINE)


@functools.lru_cache(maxsize=8)
def _endpoint_reachable(endpoint: str, timeout: float = 3.0) -> bool:
    parsed = urlparse(endpoint)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def hub_reachable() -> bool:
    """True when the hub endpoint accepts a TCP connection (checked once per process).

    huggingface_hub retries a failing request for ~25 s; probing once lets an offline user get an answer in seconds.
    """
    if hub_offline_forced():
        return False
    from huggingface_hub import constants  # heavy: huggingface_hub

    return _endpoint_reachable(constants.ENDPOINT)


def require_hub(action: str, offline_fix: str, unreachable_fix: str) -> None:
    """Raise :class:`OfflineError` before an upload or download when ``HF_HUB_OFFLINE`` is set or the hub cannot be
    reached; ``action`` starts the message (``"Cannot push to 'me/model'"``), the fixes end it."""
    if hub_offline_forced():
        raise OfflineError(f"{action}: HF_HUB_OFFLINE is set. {offline_fix}")
    if not hub_reachable():
        from huggingface_hub import constants  # heavy: huggingface_hub

        raise OfflineError(f"{action}: the hub ({constants.ENDPOINT}) cannot be reached. {unreachable_fix}")


def _commit_from_snapshot_path(path: Path) -> str | None:
    parts = Path(path).parts
    if "snapshots" in parts:
        candidate = parts[parts.index("snapshots") + 1]
        if _COMMIT_RE.fullmatch(candidate):
            return candidate
    return None


def fetch_file(repo_id: str, filename: str, revision: str | None = None, token: str | bool | None = None) -> Path:
    """Download (or read from cache) one file; fail in seconds with :class:`OfflineError` when unreachable."""
    from huggingface_hub import hf_hub_download  # heavy: huggingface_hub
    from huggingface_hub.errors import (  # heavy: huggingface_hub
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    online = hub_reachable()
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, token=token, local_files_only=not online))
    except LocalEntryNotFoundError as err:
        if not online:
            if _cached_as_missing(repo_id, filename, revision):
                # An earlier online call learnt the file does not exist: answer the same offline.
                raise EntryNotFoundError(f"{filename!r} does not exist in {repo_id!r} (cached answer).") from err
            raise OfflineError(_offline_message(repo_id)) from err
        raise
    except RepositoryNotFoundError as err:
        raise ModelNameError(not_found_message(repo_id)) from err
    except RevisionNotFoundError as err:
        raise ModelNameError(f"revision={revision!r} does not exist in repository {repo_id!r}.") from err
    except EntryNotFoundError:
        raise
    except Exception as err:  # LocalEntryNotFoundError and connection errors
        if not online:
            raise OfflineError(_offline_message(repo_id)) from err
        raise


def _cached_as_missing(repo_id: str, filename: str, revision: str | None) -> bool:
    from huggingface_hub import _CACHED_NO_EXIST, try_to_load_from_cache  # heavy: huggingface_hub

    return try_to_load_from_cache(repo_id, filename, revision=revision) is _CACHED_NO_EXIST


def fetch_snapshot(
    repo_id: str,
    revision: str | None = None,
    token: str | bool | None = None,
    allow_pickle: bool = False,
) -> FetchedRepo:
    """Download the metadata and safetensors weights of a repo (pickle weights only with ``allow_pickle``)."""
    from huggingface_hub import HfApi, snapshot_download  # heavy: huggingface_hub
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError  # heavy: huggingface_hub

    online = hub_reachable()
    patterns = list(SAFE_PATTERNS)
    if online:
        try:
            info = HfApi().model_info(repo_id, revision=revision, token=token, files_metadata=False)
        except RepositoryNotFoundError as err:
            raise ModelNameError(not_found_message(repo_id)) from err
        except RevisionNotFoundError as err:
            raise ModelNameError(f"revision={revision!r} does not exist in repository {repo_id!r}.") from err
        files = [s.rfilename for s in (info.siblings or [])]
        has_safetensors = any(f.endswith(".safetensors") for f in files)
        has_pickle = any(f.endswith(PICKLE_SUFFIXES) for f in files)
        if has_pickle and not has_safetensors:
            if not allow_pickle:
                raise UnsafeCheckpointError(pickle_refusal_message(f"{repo_id}@{revision or 'main'}"))
            patterns += [f"*{suffix}" for suffix in PICKLE_SUFFIXES]
        revision = info.sha or revision
    try:
        local = snapshot_download(
            repo_id, revision=revision, allow_patterns=patterns, token=token, local_files_only=not online
        )
    except Exception as err:
        if not online:
            raise OfflineError(_offline_message(repo_id)) from err
        raise
    local_path = Path(local)
    commit = _commit_from_snapshot_path(local_path) or revision
    return FetchedRepo(repo_id=repo_id, local_dir=local_path, revision=commit)


def not_found_message(repo_id: str) -> str:
    """The hub answers 404 both for a missing repo and for a private or gated one the caller cannot see."""
    return (
        f"Repository {repo_id!r} was not found on the hub ({_endpoint()}). Check the name. If it is a private or "
        "gated repo, the hub answers 'not found' until you authenticate: set HF_TOKEN, run `hf auth login`, or pass "
        "token=... (and request access to a gated repo on its page)."
    )


def _endpoint() -> str:
    from huggingface_hub import constants  # heavy: huggingface_hub

    return constants.ENDPOINT


def _offline_message(repo_id: str) -> str:
    why = "HF_HUB_OFFLINE is set" if hub_offline_forced() else f"the hub ({_endpoint()}) cannot be reached"
    return (
        f"Cannot load {repo_id!r}: {why} and it is not in the local cache "
        f"({os.environ.get('HF_HUB_CACHE', '~/.cache/huggingface/hub')}). "
        "Download it once while online, point to a local folder, or use a packaged offline backbone "
        "('packaged:efficientnet_lite0', 'packaged:all-MiniLM-L6-v2')."
    )
