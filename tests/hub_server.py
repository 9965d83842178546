"""A local, Hugging Face Hub-compatible HTTP server for tests (standard library only).

It implements the part of the Hub HTTP API that the real ``huggingface_hub`` client (2.x, httpx based) calls for
``create_repo``/``delete_repo``, ``whoami``, ``repo_info``/``model_info``, ``upload_file``/``upload_folder``/
``create_commit`` (preupload, plain Git LFS batch + PUT, ndjson commit), ``list_repo_files``/``list_repo_tree``,
``list_repo_refs``, ``list_repo_commits``, ``create_branch``/``delete_branch``, ``create_tag``/``delete_tag`` and
``hf_hub_download``/``snapshot_download`` (``HEAD``/``GET /{repo_id}/resolve/{revision}/{path}``, with ``Range``).
Response shapes follow what the client parses (see ``huggingface_hub/hf_api.py``, ``_commit_api.py``, ``lfs.py`` and
``file_download.py``). Xet is not implemented: clients must run with ``HF_HUB_DISABLE_XET=1`` (see :func:`hf_env`).

The client reads ``HF_ENDPOINT`` and friends at import time, so drive it from a subprocess started with
``env=hf_env(server, cache_dir)``.

Storage layout under ``root`` (repositories survive a server restart on the same root)::

    blobs/<sha256>                                     file contents, content addressed, shared by all repos
    repos/<type>/<namespace>/<name>/repo.json          visibility, creation date, branches and tags
    repos/<type>/<namespace>/<name>/commits/<id>.json  one commit: parent, title, message, author, date, full tree

Every commit records the full file tree (path -> git blob oid, sha256, size, LFS flag). Branches and tags are refs
to commit ids (40 hex digits). ``create_repo`` makes the Hub's "initial commit" holding a ``.gitattributes``.

Run standalone with ``python tests/hub_server.py --root DIR [--port N] [--token T]``: the first stdout line is the
server URL; it serves until killed.
"""

from __future__ import annotations

import argparse
import base64
import fnmatch
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit


USER_NAME = "tester"
"""The only user: the owner of every token-authenticated request and the default namespace of new repos."""

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
"""Plural URL segment of ``/api/{type}s/...`` -> repo type."""

URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
"""Repo type -> prefix of its web/resolve/LFS URLs."""

FAULT_KINDS = frozenset({"preupload", "lfs_put", "commit", "download"})
"""Requests that :meth:`HubServer.fail_next`/:meth:`HubServer.drop_next` can sabotage (``download``: GET resolve)."""

_DROP = "drop"
"""A queued fault meaning "close the connection without answering" (other queued faults are HTTP statuses)."""

LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
"""Files this large always go through LFS, like on the Hub."""

DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*",
        "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb",
        "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors", "saved_model/**/*", "*.tar.*",
        "*.tar", "*.tflite", "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*",
    )
)  # fmt: skip
"""The ``.gitattributes`` of the initial commit (the Hub's default LFS patterns)."""

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_COMMIT_ID_RE = re.compile(r"[0-9a-f]{40}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_RANGE_RE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", re.IGNORECASE)
_COPY_CHUNK = 1024 * 1024

RepoKey = tuple[str, str]
"""``(repo_type, repo_id)``, e.g. ``("model", "tester/tiny-bert")``."""


class HubError(Exception):
    """An error answered the way the Hub does: status, ``X-Error-Code``/``X-Error-Message`` headers, JSON body."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        *,
        repo_commit: str | None = None,
        extra: dict[str, Any] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.repo_commit = repo_commit
        self.extra = extra or {}  # more fields of the JSON body


def _repo_not_found(repo: RepoKey) -> HubError:
    return HubError(404, f"Repository {repo[1]} ({repo[0]}) not found", "RepoNotFound")


class _ConnectionDropped(Exception):
    """Raised after a fault-injected connection drop, to unwind the request handler without answering."""


class _CommitOp(NamedTuple):
    """One operation of an ndjson commit payload."""

    kind: str  # "file" | "lfsFile" | "deletedFile" | "deletedFolder"
    path: str
    content: bytes | None = None  # "file": the decoded content
    oid: str | None = None  # "lfsFile": sha256 of the uploaded LFS object
    size: int | None = None  # "lfsFile": announced size, if any


# --------------------------------------------------------------------------------------------------------------------
# Git/LFS helpers
# --------------------------------------------------------------------------------------------------------------------


def _git_blob_oid(data: bytes) -> str:
    """The git object id of a blob (what the Hub reports as ``oid``/``blobId`` and as ETag of regular files)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    """The Git LFS pointer file git stores in place of an LFS file."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _regular_entry(data: bytes) -> dict[str, Any]:
    """Tree entry of a file stored in git itself."""
    return {"oid": _git_blob_oid(data), "sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "lfs": False}


def _lfs_entry(sha256: str, size: int) -> dict[str, Any]:
    """Tree entry of an LFS file: git holds the pointer, so the git oid is the pointer's."""
    return {"oid": _git_blob_oid(_lfs_pointer(sha256, size)), "sha256": sha256, "size": size, "lfs": True}


def _lfs_patterns(gitattributes: str) -> list[str]:
    """Path patterns marked ``filter=lfs`` in a ``.gitattributes`` file."""
    return [fields[0] for fields in map(str.split, gitattributes.splitlines()) if "filter=lfs" in fields[1:]]


def _should_use_lfs(path: str, size: int, sample: bytes, patterns: list[str]) -> bool:
    """The Hub's preupload decision: large, binary-looking, or matched by an LFS pattern of ``.gitattributes``."""
    if size >= LFS_SIZE_THRESHOLD or b"\0" in sample:
        return True
    name = path.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(path if "/" in pattern else name, pattern) for pattern in patterns)


def _iso_now() -> str:
    """Current UTC time in the Hub's date format, e.g. ``2024-05-01T12:00:00.123Z``."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def _validate_repo_path(path: Any) -> str:
    """A relative POSIX path inside a repo, or HTTP 400."""
    if not isinstance(path, str) or not path or path.startswith("/") or "\\" in path:
        raise HubError(400, f"Invalid path in repo: {path!r}")
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise HubError(400, f"Invalid path in repo: {path!r}")
    return path


def _tree_listing(files: dict[str, dict], path: str, recursive: bool) -> list[dict] | None:
    """Entries of ``GET .../tree/{rev}/{path}`` (files and folders), or None if ``path`` is not a folder."""
    prefix = f"{path.strip('/')}/" if path.strip("/") else ""
    folder_oids: dict[str, list[str]] = {}
    entries = []
    for file_path in sorted(files):
        if not file_path.startswith(prefix):
            continue
        parts = file_path[len(prefix) :].split("/")
        for depth in range(1, len(parts)):
            folder_oids.setdefault(prefix + "/".join(parts[:depth]), []).append(files[file_path]["oid"])
        if recursive or len(parts) == 1:
            entry = files[file_path]
            item = {"type": "file", "oid": entry["oid"], "size": entry["size"], "path": file_path}
            if entry["lfs"]:
                pointer_size = len(_lfs_pointer(entry["sha256"], entry["size"]))
                item["lfs"] = {"oid": entry["sha256"], "size": entry["size"], "pointerSize": pointer_size}
            entries.append(item)
    if prefix and not entries and not folder_oids:
        return None
    for folder, oids in folder_oids.items():
        if recursive or "/" not in folder[len(prefix) :]:
            oid = hashlib.sha1("\n".join(oids).encode()).hexdigest()
            entries.append({"type": "directory", "oid": oid, "size": 0, "path": folder})
    return sorted(entries, key=lambda item: item["path"])


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """Inclusive byte span of a single ``Range: bytes=...`` header, or None if malformed or unsatisfiable."""
    match = _RANGE_RE.fullmatch(header)
    if match is None or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    else:  # suffix range: the last N bytes
        start, end = max(size - int(last), 0), size - 1
        if int(last) == 0:
            return None
    return (start, end) if start <= end else None


def _parse_commit_payload(body: bytes) -> tuple[dict, list[_CommitOp]]:
    """Split the ndjson body of ``POST .../commit/{rev}`` into its header and operations (HTTP 400 if malformed)."""
    header = None
    operations = []
    for line in body.splitlines():
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            key, value = item["key"], item["value"]
        except (ValueError, KeyError, TypeError) as err:
            raise HubError(400, f"Malformed ndjson commit payload: {err}") from err
        if key == "header":
            header = value
        elif key == "file":
            if value.get("encoding") != "base64":
                raise HubError(400, "Only base64-encoded file contents are supported")
            content = base64.b64decode(value.get("content", ""), validate=True)
            operations.append(_CommitOp("file", _validate_repo_path(value.get("path")), content=content))
        elif key == "lfsFile":
            oid = value.get("oid")
            if value.get("algo", "sha256") != "sha256" or not isinstance(oid, str) or not _SHA256_RE.fullmatch(oid):
                raise HubError(400, f"Invalid LFS object id {oid!r} (sha256 expected)")
            path = _validate_repo_path(value.get("path"))
            operations.append(_CommitOp("lfsFile", path, oid=oid, size=value.get("size")))
        elif key == "deletedFile":
            operations.append(_CommitOp(key, _validate_repo_path(value.get("path"))))
        elif key == "deletedFolder":
            operations.append(_CommitOp(key, _validate_repo_path(str(value.get("path", "")).rstrip("/"))))
        else:
            raise HubError(400, f"Unknown commit operation {key!r}")
    if not isinstance(header, dict) or not header.get("summary"):
        raise HubError(400, "The commit payload needs a header with a non-empty summary")
    return header, operations


# --------------------------------------------------------------------------------------------------------------------
# Storage
# --------------------------------------------------------------------------------------------------------------------


class RepoStore:
    """Repositories, commits and blobs on disk. Thread-safe: every public method runs under one lock."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._lock = threading.RLock()
        self._blobs = self.root / "blobs"
        self._repos = self.root / "repos"
        self._tmp = self.root / "tmp"
        for folder in (self._blobs, self._repos, self._tmp):
            folder.mkdir(parents=True, exist_ok=True)

    # ---- blobs ------------------------------------------------------------------------------------------------------

    def blob_path(self, sha256: str) -> Path:
        """Where the content with this sha256 is (or would be) stored."""
        return self._blobs / sha256

    def has_blob(self, sha256: str) -> bool:
        """Whether content with this sha256 is stored."""
        return _SHA256_RE.fullmatch(sha256) is not None and self.blob_path(sha256).is_file()

    def put_blob(self, data: bytes) -> str:
        """Store ``data`` (no-op if already stored) and return its sha256."""
        sha256 = hashlib.sha256(data).hexdigest()
        if not self.has_blob(sha256):
            self.put_blob_stream([data], sha256, len(data))
        return sha256

    def put_blob_stream(self, chunks: Iterable[bytes], sha256: str, size: int) -> None:
        """Store streamed content announced as ``(sha256, size)``; HTTP 400 (nothing stored) if it does not match."""
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp)
        try:
            digest, received = hashlib.sha256(), 0
            with os.fdopen(fd, "wb") as tmp:
                for chunk in chunks:
                    digest.update(chunk)
                    received += len(chunk)
                    tmp.write(chunk)
            if digest.hexdigest() != sha256 or received != size:
                raise HubError(
                    400,
                    f"Uploaded content (sha256 {digest.hexdigest()}, {received} bytes) does not match the announced"
                    f" object (sha256 {sha256}, {size} bytes)",
                )
            os.replace(tmp_name, self.blob_path(sha256))
        finally:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)

    # ---- repos ------------------------------------------------------------------------------------------------------

    def _dir(self, repo: RepoKey) -> Path:
        return self._repos / repo[0] / repo[1]

    def _write_json(self, path: Path, data: dict) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)

    def meta(self, repo: RepoKey) -> dict | None:
        """``{"private", "createdAt", "branches": {name: commit}, "tags": {name: commit}}``, or None if no repo."""
        with self._lock:
            path = self._dir(repo) / "repo.json"
            return json.loads(path.read_text()) if path.is_file() else None

    def _meta_or_404(self, repo: RepoKey) -> dict:
        meta = self.meta(repo)
        if meta is None:
            raise _repo_not_found(repo)
        return meta

    def create_repo(self, repo: RepoKey, *, private: bool) -> bool:
        """Create a repo with the Hub's initial commit on ``main``; False if it already exists."""
        with self._lock:
            folder = self._dir(repo)
            if (folder / "repo.json").is_file():
                return False
            (folder / "commits").mkdir(parents=True, exist_ok=True)
            data = DEFAULT_GITATTRIBUTES.encode()
            self.put_blob(data)
            files = {".gitattributes": _regular_entry(data)}
            initial = self._write_commit(repo, [], files, "initial commit", "", "system")
            meta = {"private": private, "createdAt": _iso_now(), "branches": {"main": initial}, "tags": {}}
            self._write_json(folder / "repo.json", meta)
            return True

    def delete_repo(self, repo: RepoKey) -> bool:
        """Delete a repo (its blobs stay, they are shared); False if it does not exist."""
        with self._lock:
            if self.meta(repo) is None:
                return False
            shutil.rmtree(self._dir(repo))
            return True

    def resolve(self, repo: RepoKey, revision: str) -> str:
        """Commit id of a branch, tag or full commit id; 404 ``RevisionNotFound`` otherwise."""
        with self._lock:
            meta = self._meta_or_404(repo)
            if revision in meta["branches"]:
                return meta["branches"][revision]
            if revision in meta["tags"]:
                return meta["tags"][revision]
            if _COMMIT_ID_RE.fullmatch(revision) and (self._dir(repo) / "commits" / f"{revision}.json").is_file():
                return revision
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def read_commit(self, repo: RepoKey, commit_id: str) -> dict:
        """``{"id", "parents", "title", "message", "authors", "date", "files": {path: entry}}``."""
        with self._lock:
            return json.loads((self._dir(repo) / "commits" / f"{commit_id}.json").read_text())

    def history(self, repo: RepoKey, commit_id: str) -> list[dict]:
        """Commits reachable from ``commit_id`` through first parents, newest first."""
        with self._lock:
            commits = [self.read_commit(repo, commit_id)]
            while commits[-1]["parents"]:
                commits.append(self.read_commit(repo, commits[-1]["parents"][0]))
            return commits

    def _write_commit(
        self, repo: RepoKey, parents: list[str], files: dict, title: str, message: str, author: str
    ) -> str:
        record = {"parents": parents, "title": title, "message": message, "authors": [author], "date": _iso_now()}
        record["files"] = files
        serialized = json.dumps(record, sort_keys=True).encode()
        record["id"] = hashlib.sha1(serialized + str(time.time_ns()).encode()).hexdigest()
        self._write_json(self._dir(repo) / "commits" / f"{record['id']}.json", record)
        return record["id"]

    def commit(
        self,
        repo: RepoKey,
        branch: str,
        operations: list[_CommitOp],
        *,
        title: str,
        message: str,
        author: str,
        parent_commit: str | None = None,
    ) -> str:
        """Apply ``operations`` on top of ``branch`` atomically and return the new commit id.

        Nothing changes if any operation is invalid: an ``lfsFile`` whose object was never uploaded (or has another
        size) is a 400, deleting a missing file/folder a 404 ``EntryNotFound``, a stale ``parent_commit`` a 412.
        """
        with self._lock:
            meta = self._meta_or_404(repo)
            head = meta["branches"].get(branch)
            if head is None:
                self.resolve(repo, branch)  # 404 RevisionNotFound unless it is a tag or a commit id
                raise HubError(400, f"Invalid rev id: {branch} is not a branch, commits go to branches")
            if parent_commit is not None and parent_commit != head:
                raise HubError(412, f"A commit has happened since {parent_commit}. Please refresh and try again.")
            files = dict(self.read_commit(repo, head)["files"])
            new_contents = []
            for op in operations:
                if op.kind == "file":
                    files[op.path] = _regular_entry(op.content)
                    new_contents.append(op.content)
                elif op.kind == "lfsFile":
                    if not self.has_blob(op.oid):
                        raise HubError(400, f"LFS object {op.oid} of '{op.path}' has not been uploaded")
                    size = self.blob_path(op.oid).stat().st_size
                    if op.size is not None and op.size != size:
                        raise HubError(400, f"LFS object {op.oid} of '{op.path}' has {size} bytes, not {op.size}")
                    files[op.path] = _lfs_entry(op.oid, size)
                elif op.kind == "deletedFile":
                    if files.pop(op.path, None) is None:
                        raise HubError(404, f"A file with this name doesn't exist: {op.path}", "EntryNotFound")
                else:  # deletedFolder
                    doomed = [path for path in files if path.startswith(op.path + "/")]
                    if not doomed:
                        raise HubError(404, f"A folder with this name doesn't exist: {op.path}", "EntryNotFound")
                    for path in doomed:
                        del files[path]
            for content in new_contents:
                self.put_blob(content)
            commit_id = self._write_commit(repo, [head], files, title, message, author)
            meta["branches"][branch] = commit_id
            self._write_json(self._dir(repo) / "repo.json", meta)
            return commit_id

    def create_ref(self, repo: RepoKey, kind: str, name: str, revision: str) -> None:
        """Point a new branch or tag (``kind`` "branches"/"tags") at ``revision``; 409 if the name is taken."""
        with self._lock:
            meta = self._meta_or_404(repo)
            commit_id = self.resolve(repo, revision)
            if name in meta["branches"] or name in meta["tags"]:
                raise HubError(409, f"Reference already exists: {name}")
            meta[kind][name] = commit_id
            self._write_json(self._dir(repo) / "repo.json", meta)

    def delete_ref(self, repo: RepoKey, kind: str, name: str) -> None:
        """Delete a branch or tag; 404 ``RevisionNotFound`` if missing, 403 for ``main``."""
        with self._lock:
            meta = self._meta_or_404(repo)
            if kind == "branches" and name == "main":
                raise HubError(403, "The default branch cannot be deleted")
            if meta[kind].pop(name, None) is None:
                raise HubError(404, f"Invalid rev id: {name}", "RevisionNotFound")
            self._write_json(self._dir(repo) / "repo.json", meta)


# --------------------------------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    """The socket server; handlers reach the :class:`HubServer` through ``self.server.hub``."""

    def __init__(self, address: tuple[str, int], hub: HubServer):
        super().__init__(address, _HubRequestHandler)
        self.hub = hub


class _HubRequestHandler(BaseHTTPRequestHandler):
    """Routes one request to the Hub endpoint it targets. Request bodies are read up front (except LFS PUTs, which
    are streamed) so that every answer, errors included, leaves the keep-alive connection usable."""

    protocol_version = "HTTP/1.1"
    timeout = 60  # seconds an idle keep-alive connection may hold a thread
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet (no access log)."""

    def do_GET(self) -> None:
        self._handle()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    @property
    def hub(self) -> HubServer:
        return self.server.hub

    @property
    def store(self) -> RepoStore:
        return self.server.hub.store

    # ---- plumbing ---------------------------------------------------------------------------------------------------

    def _handle(self) -> None:
        split = urlsplit(self.path)
        self._raw_path = split.path
        self._query = dict(parse_qsl(split.query))
        self.hub._log_request(self.command, split.path)
        segments = [unquote(segment) for segment in split.path.strip("/").split("/")]
        is_lfs_put = self.command == "PUT" and segments[0] == "lfs-upload"
        try:
            self._body = b"" if is_lfs_put else b"".join(self._iter_body())
            self._dispatch(segments)
        except HubError as err:
            self._send_error(err)
        except _ConnectionDropped:
            pass
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception as err:  # a server bug: answer 500 and show it in the test output
            traceback.print_exc()
            self._send_error(HubError(500, f"Internal test-server error: {err!r}"))

    def _iter_body(self, chunk_size: int = _COPY_CHUNK) -> Iterator[bytes]:
        """The request body, chunk by chunk (``Content-Length`` or chunked transfer encoding)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while (size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)) > 0:
                yield self.rfile.read(size)
                self.rfile.readline()  # CRLF closing the chunk
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return
        remaining = int(self.headers.get("Content-Length") or 0)
        while remaining > 0:
            chunk = self.rfile.read(min(chunk_size, remaining))
            if not chunk:
                raise ConnectionError("client closed the connection in the middle of the request body")
            remaining -= len(chunk)
            yield chunk

    def _drain(self) -> None:
        """Read and discard the request body (for answers that do not need a streamed body)."""
        for _ in self._iter_body():
            pass

    def _json_body(self) -> dict:
        try:
            data = json.loads(self._body or b"{}")
        except ValueError as err:
            raise HubError(400, f"Invalid JSON body: {err}") from err
        if not isinstance(data, dict):
            raise HubError(400, "JSON object expected")
        return data

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        content_type = {"Content-Type": "application/json; charset=utf-8"}
        self._send(status, json.dumps(data).encode(), {**content_type, **(headers or {})})

    def _send_error(self, err: HubError) -> None:
        headers = {"X-Error-Message": err.message.encode("ascii", "replace").decode()}
        if err.code is not None:
            headers["X-Error-Code"] = err.code
        if err.repo_commit is not None:
            headers["X-Repo-Commit"] = err.repo_commit
        self._send_json(err.status, {**err.extra, "error": err.message}, headers)

    def _drop_connection(self) -> None:
        """Close the socket without (finishing) an answer, like a network failure; unwinds the handler."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        raise _ConnectionDropped

    def _apply_fault(self, kind: str) -> None:
        """Fail or drop this request if a fault of ``kind`` is queued (the request body has been read)."""
        fault = self.hub._take_fault(kind)
        if fault is _DROP:
            self._drop_connection()
        if fault is not None:
            raise HubError(fault, f"Injected failure of this {kind} request")

    def _user(self) -> str | None:
        """The authenticated user, None if anonymous; 401 for a wrong token (like the Hub, even on public repos)."""
        if self.hub.token is None:
            return USER_NAME
        authorization = self.headers.get("Authorization")
        if authorization is None:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.hub.token.encode()):
            return USER_NAME
        raise HubError(401, "Invalid credentials in Authorization header")

    def _require_user(self) -> str:
        user = self._user()
        if user is None:
            raise HubError(401, "You must be authenticated to do this (pass a token)")
        return user

    def _open_repo(self, repo: RepoKey, *, write: bool = False) -> dict:
        """The repo's metadata, if the caller may read it and (with ``write``) is authenticated.

        Private repos are a 404 ``RepoNotFound`` for anonymous callers, like on the Hub.
        """
        user = self._user()
        meta = self.store.meta(repo)
        if meta is None or (meta["private"] and user is None):
            raise _repo_not_found(repo)
        if write and user is None:
            raise HubError(401, "You must be authenticated to write to this repository")
        return meta

    def _send_page(self, items: list) -> None:
        """A page of ``items`` with a GitHub-style ``Link: <...>; rel="next"`` header while more remain."""
        cursor = int(self._query.get("cursor", "0"))
        end = cursor + self.hub.page_size
        headers = {}
        if end < len(items):
            next_query = urlencode({**self._query, "cursor": str(end)})
            headers["Link"] = f'<{self.hub.url}{self._raw_path}?{next_query}>; rel="next"'
        self._send_json(200, items[cursor:end], headers)

    # ---- routing ----------------------------------------------------------------------------------------------------

    def _dispatch(self, segments: list[str]) -> None:
        method = self.command
        if segments[0] == "api":
            return self._dispatch_api(method, segments[1:])
        if method == "PUT" and len(segments) == 2 and segments[0] == "lfs-upload":
            return self._lfs_put(segments[1])
        repo_type = "model"
        if segments[0] in ("datasets", "spaces"):
            repo_type, segments = REPO_TYPES[segments[0]], segments[1:]
        if method in ("GET", "HEAD") and len(segments) >= 5 and segments[2] == "resolve":
            return self._resolve((repo_type, f"{segments[0]}/{segments[1]}"), segments[3], "/".join(segments[4:]))
        if method == "POST" and len(segments) == 6 and segments[1].endswith(".git"):
            if segments[2:] == ["info", "lfs", "objects", "batch"]:
                return self._lfs_batch((repo_type, f"{segments[0]}/{segments[1][: -len('.git')]}"))
        raise HubError(404, f"No such endpoint: {method} {self._raw_path}")

    def _dispatch_api(self, method: str, segments: list[str]) -> None:
        match (method, segments):
            case ("GET", ["whoami-v2"]):
                return self._whoami()
            case ("POST", ["validate-yaml"]):
                return self._send_json(200, {"errors": [], "warnings": []})
            case ("POST", ["repos", "create"]):
                return self._create_repo()
            case ("DELETE", ["repos", "delete"]):
                return self._delete_repo()
            case (_, [plural, namespace, name, *rest]) if plural in REPO_TYPES:
                return self._dispatch_repo_api(method, (REPO_TYPES[plural], f"{namespace}/{name}"), rest)
        raise HubError(404, f"No such endpoint: {method} {self._raw_path}")

    def _dispatch_repo_api(self, method: str, repo: RepoKey, rest: list[str]) -> None:
        match (method, rest):
            case ("GET", []):
                return self._repo_info(repo, "main")
            case ("GET", ["revision", revision]):
                return self._repo_info(repo, revision)
            case ("POST", ["preupload", revision]):
                return self._preupload(repo, revision)
            case ("POST", ["commit", revision]):
                return self._commit(repo, revision)
            case ("GET", ["tree", revision, *path]):
                return self._tree(repo, revision, "/".join(path))
            case ("GET", ["refs"]):
                return self._refs(repo)
            case ("GET", ["commits", revision]):
                return self._commits(repo, revision)
            case ("POST", ["branch", branch]):
                self._open_repo(repo, write=True)
                self.store.create_ref(repo, "branches", branch, self._json_body().get("startingPoint") or "main")
                return self._send_json(200, {})
            case ("DELETE", ["branch", branch]):
                self._open_repo(repo, write=True)
                self.store.delete_ref(repo, "branches", branch)
                return self._send_json(200, {})
            case ("POST", ["tag", revision]):
                self._open_repo(repo, write=True)
                tag = self._json_body().get("tag")
                if not isinstance(tag, str) or not tag:
                    raise HubError(400, "A non-empty 'tag' is required")
                self.store.create_ref(repo, "tags", tag, revision)
                return self._send_json(200, {})
            case ("DELETE", ["tag", tag]):
                self._open_repo(repo, write=True)
                self.store.delete_ref(repo, "tags", tag)
                return self._send_json(200, {})
        raise HubError(404, f"No such endpoint: {method} {self._raw_path}")

    # ---- account and repos ------------------------------------------------------------------------------------------

    def _whoami(self) -> None:
        user = self._require_user()
        self._send_json(
            200,
            {
                "type": "user",
                "id": hashlib.sha1(user.encode()).hexdigest()[:24],
                "name": user,
                "fullname": "Test User",
                "email": f"{user}@example.invalid",
                "emailVerified": True,
                "isPro": False,
                "canPay": False,
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "test-token", "role": "write"}},
            },
        )

    def _repo_key_from_body(self, payload: dict) -> RepoKey:
        """``(type, "namespace/name")`` from a create/delete payload (``organization`` defaults to the user)."""
        name, namespace = payload.get("name"), payload.get("organization") or USER_NAME
        repo_type = payload.get("type") or "model"
        if repo_type not in URL_PREFIXES:
            raise HubError(400, f"Invalid repo type: {repo_type!r}")
        for part in (namespace, name):
            if not isinstance(part, str) or not _NAME_RE.fullmatch(part):
                raise HubError(400, f"Invalid repo name part: {part!r}")
        return repo_type, f"{namespace}/{name}"

    def _create_repo(self) -> None:
        self._require_user()
        payload = self._json_body()
        repo = self._repo_key_from_body(payload)
        # huggingface_hub 2.x sends "visibility"; older clients sent "private"
        private = payload.get("visibility") == "private" or payload.get("private") is True
        url = f"{self.hub.url}/{URL_PREFIXES[repo[0]]}{repo[1]}"
        if not self.store.create_repo(repo, private=private):
            # create_repo(exist_ok=True) reads the url of the existing repo from this answer
            raise HubError(409, f"You already created this {repo[0]} repo: {repo[1]}", extra={"url": url})
        self._send_json(200, {"url": url, "name": repo[1], "id": repo[1]})

    def _delete_repo(self) -> None:
        self._require_user()
        repo = self._repo_key_from_body(self._json_body())
        self._open_repo(repo, write=True)
        self.store.delete_repo(repo)
        self._send_json(200, {})

    def _repo_info(self, repo: RepoKey, revision: str) -> None:
        meta = self._open_repo(repo)
        commit_id = self.store.resolve(repo, revision)
        commit = self.store.read_commit(repo, commit_id)
        with_blobs = self._query.get("blobs", "").lower() in ("1", "true")
        siblings = []
        for path, entry in sorted(commit["files"].items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if with_blobs:
                sibling.update(size=entry["size"], blobId=entry["oid"])
                if entry["lfs"]:
                    pointer_size = len(_lfs_pointer(entry["sha256"], entry["size"]))
                    sibling["lfs"] = {"size": entry["size"], "sha256": entry["sha256"], "pointerSize": pointer_size}
            siblings.append(sibling)
        info = {
            "id": repo[1],
            "author": repo[1].split("/")[0],
            "sha": commit_id,
            "lastModified": commit["date"],
            "createdAt": meta["createdAt"],
            "private": meta["private"],
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
        }
        if repo[0] == "model":
            info["modelId"] = repo[1]
        self._send_json(200, info)

    def _tree(self, repo: RepoKey, revision: str, path: str) -> None:
        self._open_repo(repo)
        commit_id = self.store.resolve(repo, revision)
        recursive = self._query.get("recursive", "").lower() in ("1", "true")
        items = _tree_listing(self.store.read_commit(repo, commit_id)["files"], path, recursive)
        if items is None:
            raise HubError(404, f"Folder not found: {path}", "EntryNotFound", repo_commit=commit_id)
        self._send_page(items)

    def _refs(self, repo: RepoKey) -> None:
        meta = self._open_repo(repo)

        def refs(kind: str, prefix: str) -> list[dict]:
            return [
                {"name": name, "ref": f"{prefix}{name}", "targetCommit": commit_id}
                for name, commit_id in sorted(meta[kind].items())
            ]

        self._send_json(
            200,
            {"branches": refs("branches", "refs/heads/"), "tags": refs("tags", "refs/tags/"), "converts": [],
             "pullRequests": []},
        )  # fmt: skip

    def _commits(self, repo: RepoKey, revision: str) -> None:
        self._open_repo(repo)
        history = self.store.history(repo, self.store.resolve(repo, revision))
        self._send_page(
            [
                {
                    "id": commit["id"],
                    "title": commit["title"],
                    "message": commit["message"],
                    "authors": [{"user": author} for author in commit["authors"]],
                    "date": commit["date"],
                }
                for commit in history
            ]
        )

    # ---- uploads ----------------------------------------------------------------------------------------------------

    def _preupload(self, repo: RepoKey, revision: str) -> None:
        self._open_repo(repo, write=True)
        commit_id = self.store.resolve(repo, revision)
        files = self.store.read_commit(repo, commit_id)["files"]
        gitattributes = files.get(".gitattributes")
        patterns = _lfs_patterns(self.hub._read(gitattributes).decode()) if gitattributes else []
        requested = self._json_body().get("files")
        if not isinstance(requested, list):
            raise HubError(400, "'files' must be a list")
        self._apply_fault("preupload")
        answers = []
        for item in requested:
            path = _validate_repo_path(item.get("path"))
            sample = base64.b64decode(item.get("sample", ""))
            lfs = _should_use_lfs(path, int(item.get("size", 0)), sample, patterns)
            existing = files.get(path)
            # The client skips unchanged files by comparing this oid with its own: sha256 for LFS, git oid otherwise.
            oid = None if existing is None else existing["sha256"] if existing["lfs"] else existing["oid"]
            mode = "lfs" if lfs else "regular"
            answers.append({"path": path, "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        self._send_json(200, {"files": answers, "commitOid": commit_id})

    def _lfs_batch(self, repo: RepoKey) -> None:
        """Git LFS batch API (upload only, basic transfer): objects not stored yet get a single-use PUT URL."""
        self._open_repo(repo, write=True)
        payload = self._json_body()
        if payload.get("operation") != "upload":
            raise HubError(422, "Only the 'upload' operation is supported")
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj.get("oid"), obj.get("size")
            answer: dict[str, Any] = {"oid": oid, "size": size}
            if not isinstance(oid, str) or not _SHA256_RE.fullmatch(oid) or not isinstance(size, int) or size < 0:
                answer["error"] = {"code": 422, "message": "Invalid object: sha256 oid and size expected"}
            elif not self.store.has_blob(oid):  # already stored objects get no action: the client skips them
                href = f"{self.hub.url}/lfs-upload/{self.hub._new_upload_ticket(oid, size)}"
                answer.update(authenticated=True, actions={"upload": {"href": href, "expires_in": 3600}})
            objects.append(answer)
        self._send_json(
            200,
            {"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
            {"Content-Type": "application/vnd.git-lfs+json"},
        )

    def _lfs_put(self, ticket: str) -> None:
        """Receive an LFS object on the URL handed out by the batch endpoint (like a presigned URL: no token)."""
        target = self.hub._upload_target(ticket)
        if target is None:
            self._drain()
            raise HubError(404, "Unknown or already used upload URL")
        sha256, size = target
        fault = self.hub._take_fault("lfs_put")
        if fault is _DROP:  # lose the connection part-way through the upload
            next(self._iter_body(chunk_size=max(size // 2, 1)), b"")
            self._drop_connection()
        if fault is not None:
            self._drain()
            raise HubError(fault, "Injected failure of this lfs_put request")
        self.store.put_blob_stream(self._iter_body(), sha256, size)
        self.hub._consume_upload_ticket(ticket)
        self._send(200, b"", {"ETag": f'"{sha256}"'})

    def _commit(self, repo: RepoKey, revision: str) -> None:
        self._open_repo(repo, write=True)
        user = self._require_user()
        if self._query.get("create_pr") in ("1", "true"):
            raise HubError(400, "Pull requests are not supported by this test server")
        header, operations = _parse_commit_payload(self._body)
        self._apply_fault("commit")
        commit_id = self.store.commit(
            repo,
            revision,
            operations,
            title=header["summary"],
            message=header.get("description") or "",
            author=user,
            parent_commit=header.get("parentCommit"),
        )
        commit_url = f"{self.hub.url}/{URL_PREFIXES[repo[0]]}{repo[1]}/commit/{commit_id}"
        self._send_json(
            200, {"success": True, "commitOid": commit_id, "commitUrl": commit_url, "pullRequestUrl": None}
        )

    # ---- downloads --------------------------------------------------------------------------------------------------

    def _resolve(self, repo: RepoKey, revision: str, path: str) -> None:
        """``HEAD``/``GET /{repo}/resolve/{rev}/{path}``: the file, its commit and ETag, with single-range support.

        LFS files are served directly (no CDN redirect) with ``ETag`` = ``X-Linked-Etag`` = their sha256 and
        ``X-Linked-Size``; regular files have their git blob oid as ETag.
        """
        self._open_repo(repo)
        commit_id = self.store.resolve(repo, revision)
        entry = self.store.read_commit(repo, commit_id)["files"].get(path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", repo_commit=commit_id)
        size = entry["size"]
        headers = {"X-Repo-Commit": commit_id, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        if entry["lfs"]:
            headers.update({"ETag": f'"{entry["sha256"]}"', "X-Linked-Etag": f'"{entry["sha256"]}"'})
            headers["X-Linked-Size"] = str(size)
        else:
            headers["ETag"] = f'"{entry["oid"]}"'
        status, start, end = 200, 0, size - 1
        if self.headers.get("Range") and size > 0:
            span = _parse_range(self.headers["Range"], size)
            if span is None:
                raise HubError(416, f"Range not satisfiable: {self.headers['Range']}")
            status, (start, end) = 206, span
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        length = end - start + 1
        fault = None if self.command == "HEAD" else self.hub._take_fault("download")
        if fault is not None and fault is not _DROP:
            raise HubError(fault, "Injected failure of this download request")
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if self.command == "HEAD":
            return
        to_send = length // 2 if fault is _DROP else length  # a drop loses the connection half-way
        with open(self.store.blob_path(entry["sha256"]), "rb") as blob:
            blob.seek(start)
            while to_send > 0 and (chunk := blob.read(min(_COPY_CHUNK, to_send))):
                self.wfile.write(chunk)
                to_send -= len(chunk)
        if fault is _DROP:
            self._drop_connection()


# --------------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------------

class HubServer:
    """A Hub-compatible HTTP server on 127.0.0.1 storing repos under ``root``.

    Args:
        root: storage folder (created if needed; existing repos in it are served).
        token: the only accepted ``Authorization: Bearer`` token. ``None`` disables authentication: every request
            then acts as user ``tester``.
        page_size: entries per page of the paginated listings (tree, commits); the Hub uses 1000 for trees.
    """

    def __init__(self, root: Path | str, token: str | None = "hf_test_token", *, page_size: int = 1000):
        self.root = Path(root)
        self.token = token
        self.page_size = page_size
        self.store = RepoStore(self.root)
        self._lock = threading.Lock()
        self._faults: dict[str, list[int | str]] = {kind: [] for kind in FAULT_KINDS}
        self._requests: list[tuple[str, str]] = []
        self._upload_tickets: dict[str, tuple[str, int]] = {}
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle --------------------------------------------------------------------------------------------------

    def start(self, port: int = 0) -> HubServer:
        """Bind 127.0.0.1:``port`` (0 = any free port), serve in a daemon thread, return self."""
        if self._httpd is not None:
            raise RuntimeError("HubServer is already running")
        self._httpd = _HTTPServer(("127.0.0.1", port), self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="hub-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port (idempotent)."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
        self._httpd = self._thread = None

    def __enter__(self) -> HubServer:
        return self if self._httpd is not None else self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (the value for ``HF_ENDPOINT``)."""
        if self._httpd is None:
            raise RuntimeError("HubServer is not running")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    # ---- fault injection --------------------------------------------------------------------------------------------

    def fail_next(self, kind: str, status: int = 500, times: int = 1) -> None:
        """Answer the next ``times`` requests of ``kind`` (see :data:`FAULT_KINDS`) with HTTP ``status``.

        The failed request changes nothing (a failed commit is not applied, a failed LFS PUT stores nothing). Note
        the client retries preupload, LFS batch and LFS PUT requests on 5xx/429 (sleeping 1 s, 2 s, 4 s, 8 s, 8 s);
        commits and resolve GETs are not retried. Use a 4xx status to make a retried kind fail at once.
        """
        self._queue_fault(kind, status, times)

    def drop_next(self, kind: str, times: int = 1) -> None:
        """Close the connection of the next ``times`` requests of ``kind`` without answering.

        ``lfs_put`` reads half of the body first; ``download`` sends half of the body; ``commit``/``preupload`` read
        the body. Nothing is stored or committed. The client retries dropped preupload/LFS PUT requests (after 1 s)
        and resumes dropped downloads (with a ``Range`` request if it got a full 10 MB chunk); a dropped commit
        raises ``httpx2.RemoteProtocolError`` in the client.
        """
        self._queue_fault(kind, _DROP, times)

    def _queue_fault(self, kind: str, fault: int | str, times: int) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"Unknown fault kind {kind!r}, expected one of {sorted(FAULT_KINDS)}")
        with self._lock:
            self._faults[kind].extend([fault] * times)

    def _take_fault(self, kind: str) -> int | str | None:
        with self._lock:
            return self._faults[kind].pop(0) if self._faults[kind] else None

    # ---- inspection and test-side shortcuts -------------------------------------------------------------------------

    @property
    def requests(self) -> list[tuple[str, str]]:
        """Every request received so far as ``(method, path)`` (URL path as sent, percent-encoded, no query)."""
        with self._lock:
            return list(self._requests)

    def _log_request(self, method: str, path: str) -> None:
        with self._lock:
            self._requests.append((method, path))

    def all_stored_bytes(self) -> Iterator[bytes]:
        """The bytes of every stored file: all blobs (file contents) and all repo/commit metadata (JSON)."""
        for folder in (self.root / "blobs", self.root / "repos"):
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    yield path.read_bytes()

    def refs(self, repo_id: str, repo_type: str = "model") -> dict[str, dict[str, str]]:
        """``{"branches": {name: commit_id}, "tags": {name: commit_id}}`` of a repo (KeyError if it does not exist)."""
        meta = self.store.meta((repo_type, repo_id))
        if meta is None:
            raise KeyError(f"No {repo_type} repo {repo_id}")
        return {"branches": meta["branches"], "tags": meta["tags"]}

    def create_repo(self, repo_id: str, *, private: bool = False, repo_type: str = "model") -> None:
        """Create a repo without going through HTTP (for seeding tests); ValueError if it exists."""
        if not self.store.create_repo((repo_type, repo_id), private=private):
            raise ValueError(f"{repo_type} repo {repo_id} already exists")

    def upload_files(
        self,
        repo_id: str,
        files: dict[str, bytes],
        *,
        message: str = "Upload files",
        branch: str = "main",
        repo_type: str = "model",
    ) -> str:
        """Commit ``files`` (path -> content) to ``branch`` without going through HTTP and return the commit id.

        Files are stored as LFS or regular with the same rule as the preupload endpoint.
        """
        repo = (repo_type, repo_id)
        head = self.store.read_commit(repo, self.store.resolve(repo, branch))["files"]
        gitattributes = files.get(".gitattributes")
        if gitattributes is None and ".gitattributes" in head:
            gitattributes = self._read(head[".gitattributes"])
        patterns = _lfs_patterns((gitattributes or b"").decode())
        operations = []
        for path, content in files.items():
            if content and _should_use_lfs(path, len(content), content[:512], patterns):
                operations.append(_CommitOp("lfsFile", path, oid=self.store.put_blob(content), size=len(content)))
            else:
                operations.append(_CommitOp("file", path, content=content))
        return self.store.commit(repo, branch, operations, title=message, message="", author=USER_NAME)

    def list_files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> list[str]:
        """Sorted paths of the files at ``revision``."""
        repo = (repo_type, repo_id)
        return sorted(self.store.read_commit(repo, self.store.resolve(repo, revision))["files"])

    def file_bytes(self, repo_id: str, path: str, revision: str = "main", repo_type: str = "model") -> bytes:
        """Content of ``path`` at ``revision`` (KeyError if the file does not exist there)."""
        repo = (repo_type, repo_id)
        return self._read(self.store.read_commit(repo, self.store.resolve(repo, revision))["files"][path])

    def _read(self, entry: dict) -> bytes:
        return self.store.blob_path(entry["sha256"]).read_bytes()

    # ---- LFS upload URLs --------------------------------------------------------------------------------------------

    def _new_upload_ticket(self, sha256: str, size: int) -> str:
        ticket = secrets.token_urlsafe(24)
        with self._lock:
            self._upload_tickets[ticket] = (sha256, size)
        return ticket

    def _upload_target(self, ticket: str) -> tuple[str, int] | None:
        with self._lock:
            return self._upload_tickets.get(ticket)

    def _consume_upload_ticket(self, ticket: str) -> None:
        with self._lock:
            self._upload_tickets.pop(ticket, None)


def start_hub(tmp_dir: Path | str, token: str | None = "hf_test_token") -> HubServer:
    """Start a :class:`HubServer` storing its repos in ``tmp_dir/hub`` (stop it with ``.stop()`` or ``with``)."""
    return HubServer(Path(tmp_dir) / "hub", token=token).start()


_CLIENT_ENV_PREFIXES = ("HF_", "HUGGINGFACE_", "TRANSFORMERS_OFFLINE", "TRANSFORMERS_CACHE")


def hf_env(server: HubServer, cache_dir: Path | str) -> dict[str, str]:
    """A complete environment for a subprocess running the real client against ``server``.

    It is ``os.environ`` without any ``HF_*``/``HUGGINGFACE_*``/``TRANSFORMERS_OFFLINE``/``TRANSFORMERS_CACHE``
    variable, plus: ``HF_ENDPOINT`` (the server), ``HF_HUB_DISABLE_XET=1`` (plain LFS uploads and HTTP downloads),
    ``HF_HOME``=``cache_dir`` and ``HF_HUB_CACHE``=``cache_dir/hub`` (so no user token or cache is seen),
    ``HF_TOKEN`` (the server's token, if any), offline switches at 0 (add ``HF_HUB_OFFLINE=1`` to test offline use),
    short timeouts, no telemetry/progress bars/update checks, and 127.0.0.1 excluded from any proxy. The client reads
    these at import time: pass them to a fresh process.
    """
    cache_dir = Path(cache_dir)
    env = {key: value for key, value in os.environ.items() if not key.startswith(_CLIENT_ENV_PREFIXES)}
    inherited_no_proxy = os.environ.get("NO_PROXY") or os.environ.get("no_proxy")
    no_proxy = ",".join(filter(None, [inherited_no_proxy, "127.0.0.1,localhost"]))
    env.update(
        {
            "HF_ENDPOINT": server.url,
            "HF_HUB_DISABLE_XET": "1",
            "HF_HOME": str(cache_dir),
            "HF_HUB_CACHE": str(cache_dir / "hub"),
            "HF_HUB_OFFLINE": "0",
            "TRANSFORMERS_OFFLINE": "0",
            "HF_DATASETS_OFFLINE": "0",
            "HF_HUB_ETAG_TIMEOUT": "5",
            "HF_HUB_DOWNLOAD_TIMEOUT": "10",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "HF_HUB_DISABLE_UPDATE_CHECK": "1",
            "HF_HUB_DISABLE_SYMLINKS_WARNING": "1",
            "HF_HUB_DISABLE_EXPERIMENTAL_WARNING": "1",
            "NO_PROXY": no_proxy,
            "no_proxy": no_proxy,
        }
    )
    if server.token is not None:
        env["HF_TOKEN"] = server.token
    return env


def main(argv: list[str] | None = None) -> None:
    """Serve until killed; print the URL as the first stdout line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, type=Path, help="storage folder")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free port)")
    parser.add_argument("--token", default="hf_test_token", help="accepted Bearer token; '' disables authentication")
    args = parser.parse_args(argv)
    server = HubServer(args.root, token=args.token or None).start(port=args.port)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(server.url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
