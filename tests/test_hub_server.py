"""Drive the real ``huggingface_hub`` client (and transformers/timm) against the local hub server in subprocesses.

The client reads ``HF_ENDPOINT``/``HF_HUB_OFFLINE``/... at import time, so every client call runs in a fresh
interpreter started with ``hf_env(server, cache_dir)``. Client snippets print one JSON line that the test checks.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from hub_server import HubServer, hf_env, start_hub


pytestmark = pytest.mark.integration

HUB_SERVER_SCRIPT = Path(__file__).with_name("hub_server.py")

CLIENT_PRELUDE = """
import json, os
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
api = HfApi()

def error_of(fn, *args, **kwargs):
    '''Class names (MRO) and HTTP status of the exception fn raises; None if it returns.'''
    try:
        fn(*args, **kwargs)
    except Exception as err:
        response = getattr(err, "response", None)
        return {"types": [cls.__name__ for cls in type(err).__mro__],
                "status": getattr(response, "status_code", None), "message": str(err)}
    return None

def read(path):
    with open(path, "rb") as f:
        return f.read().decode()
"""


def run_client(code: str, env: dict[str, str], timeout: float = 120) -> Any:
    """Run ``code`` (after :data:`CLIENT_PRELUDE`) in a fresh interpreter; return the JSON of its last stdout line."""
    proc = subprocess.run(
        [sys.executable, "-c", CLIENT_PRELUDE + textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"client exited with {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def count(server: HubServer, method: str, fragment: str) -> int:
    """Number of logged requests with ``method`` whose path contains ``fragment``."""
    return sum(1 for m, path in server.requests if m == method and fragment in path)


@pytest.fixture
def hub(tmp_path: Path):
    server = start_hub(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def env(hub: HubServer, tmp_path: Path) -> dict[str, str]:
    return hf_env(hub, tmp_path / "hf-home")


# Checks whoami, create_repo (public, private, exist_ok, conflict), repo_info privacy, a bad token and delete_repo.
def test_whoami_create_and_delete_repos(hub: HubServer, env: dict[str, str]):
    result = run_client(
        """
        out = {"whoami": api.whoami()["name"]}
        out["public"] = api.create_repo("public-model").repo_id
        out["private"] = api.create_repo("tester/private-model", private=True).repo_id
        out["exist_ok"] = api.create_repo("tester/public-model", exist_ok=True).repo_id
        out["conflict"] = error_of(api.create_repo, "tester/public-model")
        out["private_flags"] = [api.model_info("tester/public-model").private,
                                api.model_info("tester/private-model").private]
        out["bad_token"] = error_of(api.whoami, token="hf_wrong")
        api.delete_repo("tester/public-model")
        out["exists_after_delete"] = api.repo_exists("tester/public-model")
        print(json.dumps(out))
        """,
        env,
    )
    assert result["whoami"] == "tester"
    assert result["public"] == "tester/public-model"  # namespace defaults to the token's user
    assert result["private"] == "tester/private-model"
    assert result["exist_ok"] == "tester/public-model"
    assert result["conflict"]["status"] == 409 and "HfHubHTTPError" in result["conflict"]["types"]
    assert result["private_flags"] == [False, True]
    assert result["bad_token"]["status"] == 401
    assert result["exists_after_delete"] is False


# Checks a dataset repo: its LFS batch and resolve URLs carry the "datasets/" prefix.
def test_dataset_repo_upload_and_download(hub: HubServer, env: dict[str, str]):
    result = run_client(
        """
        url = api.create_repo("tester/table", repo_type="dataset")
        api.upload_file(path_or_fileobj=b"PAR1 fake parquet", path_in_repo="data/train.parquet",
                        repo_id="tester/table", repo_type="dataset")
        path = hf_hub_download("tester/table", "data/train.parquet", repo_type="dataset")
        print(json.dumps({"type": url.repo_type, "content": read(path),
                          "files": api.list_repo_files("tester/table", repo_type="dataset")}))
        """,
        env,
    )
    assert result == {"type": "dataset", "content": "PAR1 fake parquet",
                      "files": [".gitattributes", "data/train.parquet"]}
    assert count(hub, "POST", "/datasets/tester/table.git/info/lfs/objects/batch") == 1
    assert count(hub, "GET", "/datasets/tester/table/resolve/main/data/train.parquet") == 1
    assert hub.file_bytes("tester/table", "data/train.parquet", repo_type="dataset") == b"PAR1 fake parquet"


# Checks upload_folder: README YAML validated, .safetensors via preupload+LFS batch+PUT, listings and file metadata.
def test_upload_folder_uses_plain_lfs_and_lists_files(hub: HubServer, env: dict[str, str], tmp_path: Path):
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "README.md").write_text("---\nlicense: apache-2.0\ntags: [test]\n---\n# Tiny model UPLOAD-MARKER\n")
    (folder / "config.json").write_text('{"hidden_size": 4}')
    (folder / "sub" / "notes.txt").write_text("notes")
    weights = b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " + bytes(range(256)) * 4
    (folder / "model.safetensors").write_bytes(weights)

    result = run_client(
        f"""
        api.create_repo("tester/tiny")
        info = api.upload_folder(repo_id="tester/tiny", folder_path={str(folder)!r}, commit_message="Add tiny")
        tree = {{f.path: getattr(f, "lfs", "dir") for f in api.list_repo_tree("tester/tiny", recursive=True)}}
        model = api.model_info("tester/tiny", files_metadata=True)
        print(json.dumps({{
            "oid": info.oid,
            "files": api.list_repo_files("tester/tiny"),
            "tree": {{path: lfs if lfs in (None, "dir") else lfs.sha256 for path, lfs in tree.items()}},
            "root": sorted(f.path for f in api.list_repo_tree("tester/tiny")),
            "sha": model.sha,
            "sizes": {{s.rfilename: s.size for s in model.siblings}},
        }}))
        """,
        env,
    )
    assert result["oid"] == result["sha"] == hub.refs("tester/tiny")["branches"]["main"]
    assert result["files"] == [".gitattributes", "README.md", "config.json", "model.safetensors", "sub/notes.txt"]
    assert result["tree"]["model.safetensors"] == hashlib.sha256(weights).hexdigest()
    assert result["tree"]["README.md"] is None and result["tree"]["sub"] == "dir"
    assert result["root"] == [".gitattributes", "README.md", "config.json", "model.safetensors", "sub"]
    assert result["sizes"]["model.safetensors"] == len(weights)
    assert hub.file_bytes("tester/tiny", "model.safetensors") == weights
    assert count(hub, "POST", "/api/validate-yaml") >= 1
    assert count(hub, "POST", "/preupload/main") == 1
    assert count(hub, "POST", "/tester/tiny.git/info/lfs/objects/batch") == 1
    assert count(hub, "PUT", "/lfs-upload/") == 1  # only the .safetensors file is LFS
    assert count(hub, "POST", "/commit/main") == 1
    assert not any("xet" in path for _, path in hub.requests)
    stored = list(hub.all_stored_bytes())
    assert any(b"UPLOAD-MARKER" in data for data in stored)
    assert not any(hub.token.encode() in data for data in stored)


# Checks hf_hub_download/snapshot_download into an empty cache, then the same calls with HF_HUB_OFFLINE=1.
def test_download_online_then_offline_from_cache(hub: HubServer, env: dict[str, str]):
    hub.create_repo("tester/dl")
    weights = bytes(range(256)) * 64
    commit = hub.upload_files("tester/dl", {"config.json": b'{"a": 1}', "model.safetensors": weights})
    code = """
    config = hf_hub_download("tester/dl", "config.json")
    snapshot = snapshot_download("tester/dl")
    print(json.dumps({"config": config, "config_text": read(config), "snapshot": snapshot,
                      "files": sorted(os.listdir(snapshot)),
                      "weights_sha": __import__("hashlib").sha256(open(os.path.join(snapshot, "model.safetensors"),
                                                                           "rb").read()).hexdigest()}))
    """
    online = run_client(code, env)
    assert online["config_text"] == '{"a": 1}'
    assert online["snapshot"].endswith(f"snapshots/{commit}")
    assert online["files"] == [".gitattributes", "config.json", "model.safetensors"]
    assert online["weights_sha"] == hashlib.sha256(weights).hexdigest()
    storage = Path(env["HF_HUB_CACHE"]) / "models--tester--dl"
    assert (storage / "refs" / "main").read_text() == commit
    assert (storage / "blobs" / hashlib.sha256(weights).hexdigest()).is_file()  # LFS ETag = sha256

    requests_before = len(hub.requests)
    offline = run_client(code, {**env, "HF_HUB_OFFLINE": "1"})
    assert offline == online
    assert len(hub.requests) == requests_before  # served from the cache only


# Checks downloads at an old commit id, create_branch + upload to it, create_tag, refs, commit log and deletions.
def test_revisions_branches_tags_and_commit_log(hub: HubServer, env: dict[str, str]):
    hub.create_repo("tester/rev")
    first = hub.upload_files("tester/rev", {"weights.txt": b"v1"}, message="first")
    second = hub.upload_files("tester/rev", {"weights.txt": b"v2"}, message="second")
    result = run_client(
        f"""
        out = {{"old": read(hf_hub_download("tester/rev", "weights.txt", revision={first!r})),
               "main": read(hf_hub_download("tester/rev", "weights.txt"))}}
        api.create_branch("tester/rev", branch="dev", revision={first!r})
        api.upload_file(path_or_fileobj=b"v3", path_in_repo="weights.txt", repo_id="tester/rev", revision="dev",
                        commit_message="dev change", commit_description="why it changed")
        out["dev"] = read(hf_hub_download("tester/rev", "weights.txt", revision="dev"))
        out["main_after_dev"] = read(hf_hub_download("tester/rev", "weights.txt", revision="main",
                                                     force_download=True))
        api.create_tag("tester/rev", tag="v1.0", revision={first!r})
        out["tag"] = read(hf_hub_download("tester/rev", "weights.txt", revision="v1.0"))
        refs = api.list_repo_refs("tester/rev")
        out["branches"] = sorted(ref.name for ref in refs.branches)
        out["tags"] = {{ref.name: ref.target_commit for ref in refs.tags}}
        out["main_log"] = [c.title for c in api.list_repo_commits("tester/rev")]
        dev_log = api.list_repo_commits("tester/rev", revision="dev")
        out["dev_log"] = [[c.title, c.message, c.authors] for c in dev_log]
        out["stale_parent"] = error_of(api.upload_file, path_or_fileobj=b"v4", path_in_repo="weights.txt",
                                       repo_id="tester/rev", parent_commit={first!r})
        out["branch_conflict"] = error_of(api.create_branch, "tester/rev", branch="dev")
        api.create_branch("tester/rev", branch="dev", exist_ok=True)
        api.delete_tag("tester/rev", tag="v1.0")
        api.delete_branch("tester/rev", branch="dev")
        print(json.dumps(out))
        """,
        env,
    )
    assert result["old"] == "v1" and result["main"] == "v2" and result["main_after_dev"] == "v2"
    assert result["dev"] == "v3" and result["tag"] == "v1"
    assert result["branches"] == ["dev", "main"]
    assert result["tags"] == {"v1.0": first}
    assert result["main_log"] == ["second", "first", "initial commit"]
    assert result["dev_log"][0] == ["dev change", "why it changed", ["tester"]]
    assert [title for title, _, _ in result["dev_log"][1:]] == ["first", "initial commit"]
    assert result["stale_parent"]["status"] == 412  # main has moved on since `first`
    assert result["branch_conflict"]["status"] == 409
    assert hub.refs("tester/rev") == {"branches": {"main": second}, "tags": {}}


# Checks that misses surface as RepositoryNotFoundError, RevisionNotFoundError and EntryNotFoundError.
def test_missing_repo_revision_and_file_raise_client_errors(hub: HubServer, env: dict[str, str]):
    hub.create_repo("tester/there")
    result = run_client(
        """
        print(json.dumps({
            "repo_download": error_of(hf_hub_download, "tester/missing", "config.json"),
            "repo_info": error_of(api.model_info, "tester/missing"),
            "revision_download": error_of(hf_hub_download, "tester/there", "config.json", revision="nope"),
            "revision_info": error_of(api.model_info, "tester/there", revision="nope"),
            "entry_download": error_of(hf_hub_download, "tester/there", "config.json"),
            "file_exists": api.file_exists("tester/there", "config.json"),
        }))
        """,
        env,
    )
    assert "RepositoryNotFoundError" in result["repo_download"]["types"]
    assert "RepositoryNotFoundError" in result["repo_info"]["types"]
    assert "RevisionNotFoundError" in result["revision_download"]["types"]
    assert "RevisionNotFoundError" in result["revision_info"]["types"]
    assert "EntryNotFoundError" in result["entry_download"]["types"]
    assert result["file_exists"] is False


# Checks that a private repo is a RepositoryNotFoundError without a token and readable with it.
def test_private_repo_is_hidden_without_token(hub: HubServer, env: dict[str, str]):
    hub.create_repo("tester/secret", private=True)
    hub.upload_files("tester/secret", {"config.json": b"{}"})
    code = """
    print(json.dumps({
        "download": error_of(hf_hub_download, "tester/secret", "config.json"),
        "info": error_of(api.model_info, "tester/secret"),
        "files": error_of(api.list_repo_files, "tester/secret"),
    }))
    """
    anonymous = run_client(code, {key: value for key, value in env.items() if key != "HF_TOKEN"})
    for call in ("download", "info", "files"):
        assert "RepositoryNotFoundError" in anonymous[call]["types"], call
    assert run_client(code, env) == {"download": None, "info": None, "files": None}


# Checks fail_next("commit"): the client raises at once (no retry), the repo is unchanged, a retry succeeds.
def test_failed_commit_changes_nothing_and_retry_succeeds(hub: HubServer, env: dict[str, str]):
    hub.create_repo("tester/faulty")
    refs_before = hub.refs("tester/faulty")
    hub.fail_next("commit", status=500)
    result = run_client(
        """
        upload = lambda: api.upload_file(path_or_fileobj=b"weights", path_in_repo="w.safetensors",
                                         repo_id="tester/faulty")
        out = {"error": error_of(upload)}
        out["refs_after_failure"] = [r.target_commit for r in api.list_repo_refs("tester/faulty").branches]
        out["files_after_failure"] = api.list_repo_files("tester/faulty")
        out["retry"] = upload().oid
        print(json.dumps(out))
        """,
        env,
    )
    assert result["error"]["status"] == 500 and "HfHubHTTPError" in result["error"]["types"]
    assert result["refs_after_failure"] == [refs_before["branches"]["main"]]
    assert result["files_after_failure"] == [".gitattributes"]
    assert result["retry"] == hub.refs("tester/faulty")["branches"]["main"]
    assert hub.file_bytes("tester/faulty", "w.safetensors") == b"weights"
    assert count(hub, "POST", "/commit/main") == 2


# Checks fail_next("lfs_put") with a 4xx: the client raises before committing, nothing changes, a retry succeeds.
def test_failed_lfs_upload_creates_no_commit(hub: HubServer, env: dict[str, str]):
    hub.create_repo("tester/lfs-fail")
    refs_before = hub.refs("tester/lfs-fail")
    hub.fail_next("lfs_put", status=403)
    result = run_client(
        """
        upload = lambda: api.upload_file(path_or_fileobj=b"big weights", path_in_repo="w.safetensors",
                                         repo_id="tester/lfs-fail")
        out = {"error": error_of(upload),
               "files_after_failure": api.list_repo_files("tester/lfs-fail")}
        out["retry"] = upload().oid
        print(json.dumps(out))
        """,
        env,
    )
    assert "RuntimeError" in result["error"]["types"]  # "Error while uploading 'w.safetensors' to the Hub."
    assert result["files_after_failure"] == [".gitattributes"]
    assert count(hub, "POST", "/commit/main") == 1  # only the retry reached the commit endpoint
    assert result["retry"] == hub.refs("tester/lfs-fail")["branches"]["main"] != refs_before["branches"]["main"]
    assert hub.file_bytes("tester/lfs-fail", "w.safetensors") == b"big weights"


# Checks drop_next("lfs_put"): the connection dies mid-upload, the client retries the PUT (after 1 s) and commits.
def test_dropped_lfs_upload_is_retried_by_client(hub: HubServer, env: dict[str, str], tmp_path: Path):
    hub.create_repo("tester/lfs-drop")
    hub.drop_next("lfs_put")
    payload = random.Random(0).randbytes(1024 * 1024)
    (tmp_path / "w.safetensors").write_bytes(payload)
    result = run_client(
        f"""
        info = api.upload_file(path_or_fileobj={str(tmp_path / "w.safetensors")!r}, path_in_repo="w.safetensors",
                               repo_id="tester/lfs-drop")
        print(json.dumps({{"oid": info.oid}}))
        """,
        env,
    )
    assert count(hub, "PUT", "/lfs-upload/") == 2
    assert count(hub, "POST", "/commit/main") == 1
    assert result["oid"] == hub.refs("tester/lfs-drop")["branches"]["main"]
    assert hub.file_bytes("tester/lfs-drop", "w.safetensors") == payload


# Checks fail_next("preupload", 500): the client retries the preupload call itself (after 1 s) and succeeds.
def test_failed_preupload_is_retried_by_client(hub: HubServer, env: dict[str, str]):
    hub.create_repo("tester/pre")
    hub.fail_next("preupload", status=500)
    run_client('api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="tester/pre"); print("{}")', env)
    assert count(hub, "POST", "/preupload/main") == 2
    assert hub.file_bytes("tester/pre", "x.txt") == b"x"


# Checks that a commit naming an LFS object that was never uploaded is rejected with a 400 the client surfaces.
def test_commit_with_missing_lfs_object_is_rejected(hub: HubServer, env: dict[str, str]):
    hub.create_repo("tester/ghost")
    refs_before = hub.refs("tester/ghost")
    result = run_client(
        """
        from huggingface_hub import CommitOperationAdd
        op = CommitOperationAdd(path_in_repo="ghost.safetensors", path_or_fileobj=b"never uploaded")
        api.preupload_lfs_files = lambda *args, **kwargs: setattr(op, "_upload_mode", "lfs")  # skip the upload
        op._should_ignore, op._remote_oid = False, None
        print(json.dumps(error_of(api.create_commit, "tester/ghost", [op], commit_message="ghost")))
        """,
        env,
    )
    assert result["status"] == 400 and "BadRequestError" in result["types"]
    assert "has not been uploaded" in result["message"]
    assert hub.refs("tester/ghost") == refs_before


# Checks drop_next("download") mid-body: the client resumes the download and gets the exact content.
def test_dropped_download_is_resumed(hub: HubServer, env: dict[str, str]):
    hub.create_repo("tester/big")
    content = random.Random(0).randbytes(24 * 1024 * 1024)  # > the client's 10 MB chunk: it resumes with Range
    hub.upload_files("tester/big", {"big.bin": content})
    hub.drop_next("download")
    result = run_client(
        """
        import hashlib
        path = hf_hub_download("tester/big", "big.bin")
        print(json.dumps({"sha": hashlib.sha256(open(path, "rb").read()).hexdigest()}))
        """,
        env,
    )
    assert result["sha"] == hashlib.sha256(content).hexdigest()
    assert count(hub, "GET", "/tester/big/resolve/main/big.bin") == 2


# Checks Range requests on resolve URLs: 206 with Content-Range, suffix ranges, 416 when unsatisfiable.
def test_resolve_serves_byte_ranges(hub: HubServer):
    hub.create_repo("tester/ranges")
    commit = hub.upload_files("tester/ranges", {"data.txt": b"0123456789"})
    url = f"{hub.url}/tester/ranges/resolve/main/data.txt"

    def get(range_header: str) -> tuple[int, dict, bytes]:
        request = urllib.request.Request(url, headers={"Range": range_header})
        try:
            with urllib.request.urlopen(request) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()

    status, headers, body = get("bytes=2-5")
    assert (status, body, headers["Content-Range"]) == (206, b"2345", "bytes 2-5/10")
    assert headers["X-Repo-Commit"] == commit
    assert get("bytes=7-")[2] == b"789"
    assert get("bytes=-3")[2] == b"789"
    assert get("bytes=20-")[0] == 416


# Checks that tree and commit listings are paginated with Link headers and the client follows every page.
def test_listings_are_paginated(tmp_path: Path):
    with HubServer(tmp_path / "paged", page_size=2) as server:
        server.create_repo("tester/many")
        for i in range(3):
            server.upload_files("tester/many", {f"dir/file{i}.txt": b"x", f"top{i}.txt": b"y"}, message=f"c{i}")
        result = run_client(
            """
            print(json.dumps({"files": api.list_repo_files("tester/many"),
                              "commits": [c.title for c in api.list_repo_commits("tester/many")]}))
            """,
            hf_env(server, tmp_path / "hf-home"),
        )
        assert len(result["files"]) == 7  # .gitattributes + 6 files
        assert result["commits"] == ["c2", "c1", "c0", "initial commit"]
        assert count(server, "GET", "/tree/main") == 4  # 8 entries (the "dir" folder too) in pages of 2
        assert count(server, "GET", "/commits/main") == 2


# Checks a transformers BertModel push_to_hub then from_pretrained in a fresh process gives equal weights.
def test_transformers_push_to_hub_roundtrip(hub: HubServer, env: dict[str, str], tmp_path: Path):
    reference = tmp_path / "bert_reference.pt"
    run_client(
        f"""
        import torch
        from transformers import BertConfig, BertModel
        torch.manual_seed(0)
        config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                            vocab_size=100)
        model = BertModel(config)
        model.push_to_hub("tester/tiny-bert")
        torch.save(model.state_dict(), {str(reference)!r})
        print("{{}}")
        """,
        env,
    )
    result = run_client(
        f"""
        import torch
        from transformers import BertModel
        loaded = BertModel.from_pretrained("tester/tiny-bert").state_dict()
        reference = torch.load({str(reference)!r})
        print(json.dumps({{"keys_equal": loaded.keys() == reference.keys(),
                          "unequal": [k for k in reference if not torch.equal(reference[k], loaded[k])]}}))
        """,
        env,
    )
    assert result == {"keys_equal": True, "unequal": []}
    assert "model.safetensors" in [path.split("/")[-1] for _, path in hub.requests if "/resolve/" in path]


# Checks a timm model push_to_hf_hub then create_model("hf-hub:...", pretrained=True) gives equal weights.
def test_timm_push_to_hf_hub_roundtrip(hub: HubServer, env: dict[str, str], tmp_path: Path):
    reference = tmp_path / "vit_reference.pt"
    run_client(
        f"""
        import timm, torch
        from timm.models import push_to_hf_hub
        torch.manual_seed(0)
        model = timm.create_model("test_vit", pretrained=False)
        push_to_hf_hub(model, "tester/tiny-vit")
        torch.save(model.state_dict(), {str(reference)!r})
        print("{{}}")
        """,
        env,
    )
    result = run_client(
        f"""
        import timm, torch
        loaded = timm.create_model("hf-hub:tester/tiny-vit", pretrained=True).state_dict()
        reference = torch.load({str(reference)!r})
        print(json.dumps({{"keys_equal": loaded.keys() == reference.keys(),
                          "unequal": [k for k in reference if not torch.equal(reference[k], loaded[k])]}}))
        """,
        env,
    )
    assert result == {"keys_equal": True, "unequal": []}
    pushed = set(hub.list_files("tester/tiny-vit"))
    assert {"model.safetensors", "pytorch_model.bin", "config.json", "README.md"} <= pushed


# Checks script mode: the first stdout line is the URL, whoami answers 200 with the token and 401 without.
def test_script_mode_serves_until_killed(tmp_path: Path):
    proc = subprocess.Popen(
        [sys.executable, str(HUB_SERVER_SCRIPT), "--root", str(tmp_path / "root"), "--token", "hf_script"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = proc.stdout.readline().strip()
        request = urllib.request.Request(f"{url}/api/whoami-v2", headers={"Authorization": "Bearer hf_script"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.load(response)["name"] == "tester"
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{url}/api/whoami-v2", timeout=10)
        assert err.value.code == 401
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
