"""``hftransfer pull`` / ``hftransfer.pull``: a repo (and the base an adapter-only repo needs) for offline use.

Models are pushed to the local hub server (fixture ``hub``) with the real client, pulled with the CLI and the Python
API in fresh processes (the client reads ``HF_ENDPOINT``/``HF_HUB_OFFLINE`` at import), then loaded with
``HF_HUB_OFFLINE=1`` and a dead endpoint: the server sees no request and the logits match the originals. The quick
tier checks the refusals that come before any network call, in process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hftransfer.errors import ConfigurationError, OfflineError, OutputDirError
from hftransfer.hub.pull import pull
from hftransfer.utils.io import PICKLE_SUFFIXES

from helpers import HUB_BASES, HUB_TOKEN, SUBPROCESS_LOGS, run_py
from hub_server import HubServer, hf_env


PUSHES = {"tester/pull-full": ("timm", "full"), "tester/pull-lora": ("bert", "lora"),
          "tester/pull-timm-lora": ("timm", "lora")}


# --- quick tier: refused before any network call ---------------------------------------------------------------------


def test_pull_refuses_bad_arguments_before_touching_the_hub(tmp_path):
    # conftest sets HF_HUB_OFFLINE=1: each refusal below comes first; none creates the folder.
    with pytest.raises(ConfigurationError, match=r"repo_id='not a repo'.*namespace/name"):
        pull("not a repo", tmp_path / "a")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(OutputDirError, match=r"local_dir=.*busy.*not empty.*--overwrite"):
        pull("tester/pull-full", busy)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputDirError, match="is a file"):
        pull("tester/pull-full", tmp_path / "file")
    with pytest.raises(OfflineError, match=r"Cannot pull 'tester/pull-full': HF_HUB_OFFLINE is set"):
        pull("tester/pull-full", tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "file"]
    assert (busy / "notes.txt").read_text() == "mine"


def test_pull_help_names_the_default_folder():
    from hftransfer.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    text = " ".join(sub.choices["pull"].format_help().split())
    assert "default: a folder named after the repo in the current directory" in text
    assert "--overwrite" in text and "--revision" in text


# --- second tier: push, pull, offline load ---------------------------------------------------------------------------


PUSH_CODE = """
import torch
from hftransfer import AutoTransfer

out, refs = {{}}, {{}}
for repo, (family, method) in {pushes!r}.items():
    model = AutoTransfer.from_pretrained({bases!r}[family], id2label={{0: "neg", 1: "pos"}}, method=method).eval()
    torch.manual_seed(1)
    with torch.no_grad():  # LoRA B starts at zero: perturb the trained weights so the round trip means something
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    if model.modality == "image":
        batch = {{"pixel_values": torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(0))}}
    else:
        batch = dict(model.preprocess(["a good movie", "the film was very dull"]))
    with torch.no_grad():
        refs[repo] = {{"batch": batch, "logits": model(**batch).logits}}
    out[repo] = model.push_to_hub(repo).oid
torch.save(refs, {refs!r})
print(json.dumps(out))
"""

API_CODE = """
import hftransfer

W = Path({work!r})
os.chdir(W)
out = {{"errors": {{}}}}
result = hftransfer.pull("tester/pull-timm-lora", "timm-lora")
out["timm_lora"] = {{"files": result.files, "base": result.base_name, "summary": result.summary()}}
out["picky"] = {{"files": hftransfer.pull("tester/pull-with-pickle", "picky").files}}
result = hftransfer.pull({bert!r}, "bert-model")
out["bert_model"] = {{"kind": result.kind, "summary": result.summary()}}
(W / "busy").mkdir()
(W / "busy" / "old.txt").write_text("old")
errors = out["errors"]
errors["non_empty"] = error_of(hftransfer.pull, "tester/pull-full", "busy")
result = hftransfer.pull("tester/pull-full", "busy", overwrite=True)
out["overwritten"] = sorted(p.name for p in (W / "busy").iterdir())
errors["unknown_repo"] = error_of(hftransfer.pull, "tester/no-such-model", "x1")
errors["missing_revision"] = error_of(hftransfer.pull, "tester/pull-full", "x2", revision="nope")
errors["not_a_model"] = error_of(hftransfer.pull, "tester/pull-not-a-model", "x3")
errors["pickle_only"] = error_of(hftransfer.pull, "tester/pull-pickle-only", "x4")
errors["remote_code"] = error_of(hftransfer.pull, "tester/pull-remote-code", "x5")
out["left"] = sorted(p.name for p in W.iterdir())
print(json.dumps(out))
"""

OFFLINE_CODE = """
import torch
from hftransfer import AutoTransfer

refs = torch.load({refs!r})
out = {{}}
for repo, folder in {folders!r}.items():
    model = AutoTransfer.from_pretrained(folder).eval()
    with torch.no_grad():
        logits = model(**refs[repo]["batch"]).logits
    out[repo] = {{"diff": float((logits - refs[repo]["logits"]).abs().max()), "method": model.method.name}}
backbone = AutoTransfer.from_pretrained({backbone!r}, num_labels=2)  # a pulled plain transformers repo
out["backbone"] = {{"family": backbone.backbone.spec.family, "labels": len(backbone.id2label)}}
print(json.dumps(out))
"""


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "hftransfer.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=300)
    SUBPROCESS_LOGS.append(proc.stdout + proc.stderr)
    return proc


def without_token(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k != "HF_TOKEN"}


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hub_pull")


def repo_files(hub: HubServer, repo_id: str) -> dict[str, bytes]:
    return {path: hub.file_bytes(repo_id, path) for path in hub.list_files(repo_id) if path != ".gitattributes"}


def _seed(hub: HubServer) -> None:
    """Repos to filter or refuse: pickles beside safetensors, pickle only, not a model, remote code, lost base."""
    full = repo_files(hub, "tester/pull-full")
    hub.create_repo("tester/pull-with-pickle")
    hub.upload_files("tester/pull-with-pickle", {**full, "pytorch_model.bin": b"PK\x03\x04 pickle",
                                                 "training_args.pt": b"pickle", "modeling_x.py": b"import os\n"})
    bert_config = json.loads(hub.file_bytes(HUB_BASES["bert"], "config.json"))
    hub.create_repo("tester/pull-pickle-only")
    hub.upload_files("tester/pull-pickle-only", {"config.json": json.dumps(bert_config).encode(),
                                                 "pytorch_model.bin": b"PK\x03\x04 pickle"})
    hub.create_repo("tester/pull-not-a-model")
    hub.upload_files("tester/pull-not-a-model", {"README.md": b"# notes\n", "notes.txt": b"hello"})
    hub.create_repo("tester/pull-remote-code")
    hub.upload_files("tester/pull-remote-code", {
        "config.json": json.dumps({**bert_config, "auto_map": {"AutoModel": "modeling_x.MyModel"}}).encode(),
        "model.safetensors": hub.file_bytes(HUB_BASES["bert"], "model.safetensors"),
        "modeling_x.py": b"import os\n"})
    lora = repo_files(hub, "tester/pull-lora")
    config = json.loads(lora["hftransfer_config.json"])
    config["backbone"]["name"] = "tester/deleted-base"
    hub.create_repo("tester/pull-orphan")
    hub.upload_files("tester/pull-orphan", {**lora, "hftransfer_config.json": json.dumps(config).encode()})


@pytest.fixture(scope="module")
def pulled(hub: HubServer, work: Path) -> dict:
    """Push three models; pull them (CLI with --token, CLI with the default folder, Python API) into an empty cache."""
    run_py(PUSH_CODE.format(pushes=PUSHES, bases=HUB_BASES, refs=str(work / "refs.pt")), hf_env(hub, work / "push"))
    _seed(hub)
    pulls = work / "pulls"
    pulls.mkdir()
    env = without_token(hf_env(hub, work / "pull-cache"))
    since = len(hub.requests)
    out = {"lora": run_cli(["pull", "tester/pull-lora", "lora-dir", "--token", HUB_TOKEN], env, pulls),
           "full": run_cli(["pull", "tester/pull-full"], {**env, "HF_TOKEN": HUB_TOKEN}, pulls),
           "orphan": run_cli(["pull", "tester/pull-orphan", "orphan", "--token", HUB_TOKEN], env, pulls)}
    out["api"] = run_py(API_CODE.format(work=str(pulls), bert=HUB_BASES["bert"]), env)
    out["requests"] = hub.requests[since:]
    return out


@pytest.mark.integration
def test_pulled_adapter_and_full_models_load_offline_with_identical_logits(pulled, hub, work):
    # HF_HUB_OFFLINE=1 and a dead endpoint: the pulled folders (the LoRA ones with their base from the cache) give
    # the original logits, and the server sees no request.
    assert pulled["lora"].returncode == 0, pulled["lora"].stderr[-3000:]
    assert pulled["full"].returncode == 0, pulled["full"].stderr[-3000:]
    pulls = work / "pulls"
    folders = {"tester/pull-lora": str(pulls / "lora-dir"), "tester/pull-full": str(pulls / "pull-full"),
               "tester/pull-timm-lora": str(pulls / "timm-lora")}
    env = {**hf_env(hub, work / "pull-cache"), "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    since = len(hub.requests)
    result = run_py(OFFLINE_CODE.format(refs=str(work / "refs.pt"), folders=folders,
                                        backbone=str(pulls / "bert-model")), env)
    image = work / "digit.png"
    __import__("PIL.Image").Image.new("RGB", (48, 48), (120, 30, 200)).save(image)
    predicted = run_cli(["predict", "./timm-lora", str(image), "--no-progress"], env, pulls)
    assert hub.requests[since:] == []
    for repo, (_, method) in PUSHES.items():
        assert result[repo]["method"] == method
        assert result[repo]["diff"] <= 1e-6, (repo, result[repo])
    assert result["backbone"] == {"family": "transformers", "labels": 2}
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert str(image) in predicted.stdout and ("neg" in predicted.stdout or "pos" in predicted.stdout)


@pytest.mark.integration
def test_pull_prints_files_base_and_the_offline_command(pulled, hub):
    lora = pulled["lora"].stdout
    commit = hub.refs("tester/pull-lora")["branches"]["main"]
    base_commit = hub.refs(HUB_BASES["bert"])["branches"]["main"]
    assert f"pulled tester/pull-lora @ {commit}" in lora and "lora-dir" in lora
    assert "adapter_model.safetensors" in lora and "hftransfer_config.json" in lora and " kB" in lora
    assert f"base backbone {HUB_BASES['bert']} @ {base_commit}" in lora and "hub cache" in lora
    assert "HF_HUB_OFFLINE=1 hftransfer predict ./lora-dir INPUT..." in lora
    full = pulled["full"].stdout
    assert "model.safetensors" in full and "none needed (the folder holds the full weights)" in full
    assert "hftransfer predict ./pull-full" in full  # the default folder: the repo's name in the current directory
    timm_lora = pulled["api"]["timm_lora"]
    assert timm_lora["base"] == f"hf-hub:{HUB_BASES['timm']}" and "adapter_model.safetensors" in timm_lora["files"]
    bert_model = pulled["api"]["bert_model"]  # a plain transformers repo pulls too: a backbone to fine-tune
    assert bert_model["kind"] == "transformers" and "hftransfer train CONFIG model.name=./bert-model" in \
        bert_model["summary"]


@pytest.mark.integration
def test_pull_downloads_no_pickle_and_no_code(pulled, work):
    # pytorch_model.bin, training_args.pt and modeling_x.py sit beside the safetensors: never requested, never written.
    picky = pulled["api"]["picky"]["files"]
    assert "model.safetensors" in picky and "hftransfer_config.json" in picky
    fetched = [path for method, path in pulled["requests"] if method == "GET" and "/resolve/" in path]
    assert not [p for p in fetched if p.endswith((*PICKLE_SUFFIXES, ".py"))], fetched
    written = [p for p in (work / "pulls").rglob("*") if p.is_file()]
    assert written and not [p for p in written if p.suffix in (*PICKLE_SUFFIXES, ".py")]
    assert not [p for p in written if ".cache" in p.parts]  # only the repo's files, no download bookkeeping


@pytest.mark.integration
def test_pull_never_prints_or_writes_the_token(pulled, work):
    # Passed as --token and as HF_TOKEN: not in any output, pulled file or cache file.
    assert not [log for log in SUBPROCESS_LOGS if HUB_TOKEN in log]
    token = HUB_TOKEN.encode()
    files = [p for root in (work / "pulls", work / "pull-cache") for p in root.rglob("*") if p.is_file()]
    assert files and not [p for p in files if token in p.read_bytes()]


@pytest.mark.integration
def test_a_failed_pull_leaves_nothing_and_errors_name_the_fix(pulled, work):
    orphan = pulled["orphan"]
    assert orphan.returncode == 2
    assert "hftransfer pull: error:" in orphan.stderr and "base backbone 'tester/deleted-base'" in orphan.stderr
    assert "Nothing was written" in orphan.stderr and "merge=True" in orphan.stderr
    # No DIR and no temporary folder for any failed pull; the overwritten folder holds the new model only.
    left = pulled["api"]["left"]
    assert left == ["bert-model", "busy", "lora-dir", "picky", "pull-full", "timm-lora"], left
    assert "old.txt" not in pulled["api"]["overwritten"] and "model.safetensors" in pulled["api"]["overwritten"]
    errors = pulled["api"]["errors"]
    expected = {
        "non_empty": ("OutputDirError", ["is not empty", "overwrite=True"]),
        "unknown_repo": ("ModelNameError", ["repo_id='tester/no-such-model'", "HF_TOKEN"]),
        "missing_revision": ("ModelNameError", ["revision='nope'", "list_repo_refs", "--revision"]),
        "not_a_model": ("ForeignFolderError", ["tester/pull-not-a-model", "not an hftransfer, transformers or timm"]),
        "pickle_only": ("UnsafeCheckpointError", ["pytorch_model.bin", "safetensors only"]),
        "remote_code": ("ConfigurationError", ["auto_map", "never downloads or runs remote code"]),
    }
    for key, (kind, needles) in expected.items():
        assert kind in errors[key]["types"], (key, errors[key])
        assert "HFTransferError" in errors[key]["types"], key
        for needle in needles:
            assert needle in errors[key]["message"], (key, needle, errors[key]["message"])
