"""Push and pull hftransfer models through the real ``huggingface_hub`` client against the local hub server.

One server serves the whole module. Every client call runs in a fresh interpreter started with ``hf_env(...)`` (the
client reads ``HF_ENDPOINT``/``HF_HUB_OFFLINE`` at import time); each prints one JSON line the tests check. Pushes and
pulls are batched into a few module-scoped subprocesses to keep the file fast.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import HUB_BASES, HUB_TOKEN, SUBPROCESS_LOGS, run_py
from hub_server import HubServer, hf_env


pytestmark = pytest.mark.integration

TOKEN, BASES = HUB_TOKEN, HUB_BASES
METHODS = ["full", "linear_probe", "lp_ft", "lora"]  # lora last: the branch and switch pushes reuse it
LOGS = SUBPROCESS_LOGS  # every subprocess's output, grepped for the token at the end


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "hftransfer.cli", "push", *args], env=env, capture_output=True,
                          text=True, timeout=300)
    LOGS.append(proc.stdout + proc.stderr)
    return proc


def without_token(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k != "HF_TOKEN"}


def folder_digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def count(server: HubServer, method: str, fragment: str, since: int = 0) -> int:
    return sum(1 for m, path in server.requests[since:] if m == method and fragment in path)


def commit_title(server: HubServer, repo_id: str, branch: str = "main") -> str:
    repo = ("model", repo_id)
    return server.store.read_commit(repo, server.store.resolve(repo, branch))["title"]


def card_metadata(server: HubServer, repo_id: str, tmp: Path) -> dict:
    from huggingface_hub import metadata_load

    path = tmp / f"{repo_id.replace('/', '--')}-README.md"
    path.write_bytes(server.file_bytes(repo_id, "README.md"))
    return metadata_load(path)


# --- fixtures: one server, base backbones on it, and the subprocess runs ---------------------------------------------


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hub_push")


PUSH_CODE = """
import torch
from hftransfer import AutoTransfer

W = Path(sys.argv[1] if len(sys.argv) > 1 else {work!r})
BASES, METHODS = {bases!r}, {methods!r}

def batch(model):
    if model.modality == "image":
        return {{"pixel_values": torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(0))}}
    return dict(model.preprocess(["a good movie", "the film was very dull"]))

def perturb_trained(model):
    # LoRA B starts at zero (a trivial round trip otherwise); frozen base weights are not saved, so stay as pulled.
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)

refs, out = {{}}, {{"models": {{}}}}
for family, base in BASES.items():
    for method in METHODS:
        model = AutoTransfer.from_pretrained(base, id2label={{0: "neg", 1: "pos", 2: "mixed"}}, method=method).eval()
        perturb_trained(model)
        inputs = batch(model)
        with torch.no_grad():
            logits = model(**inputs).logits
        repo = f"tester/{{family}}-{{method}}"
        info = model.push_to_hub(repo)
        refs[repo] = {{"batch": inputs, "logits": logits}}
        spec = model.backbone.spec
        out["models"][repo] = {{"oid": info.oid, "url": str(info), "source": spec.source, "revision": spec.revision}}
        if method == "lora":
            merged = model.push_to_hub(repo + "-merged", merge=True)
            with torch.no_grad():
                after = model(**inputs).logits
            out["models"][repo + "-merged"] = {{"oid": merged.oid}}
            out[f"{{family}}_caller_untouched"] = model.method.name == "lora" and bool(torch.equal(after, logits))
            refs[repo + "-merged"] = {{"batch": inputs, "logits": logits}}
    if family == "bert":
        info = model.push_to_hub("tester/private-branch", private=True, revision="dev",
                                 commit_message="Dev upload of the lora model")
        refs["tester/private-branch@dev"] = {{"batch": inputs, "logits": logits}}
        out["private_oid"] = info.oid
        # Full weights first, then adapter-only: the stale model.safetensors goes away in the same commit.
        model.push_to_hub("tester/switch", full_weights=True)
        out["switch_first"] = sorted(__import__("huggingface_hub").list_repo_files("tester/switch"))
        model.push_to_hub("tester/switch")
torch.save(refs, W / "refs.pt")
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def pushed(hub: HubServer, work: Path) -> dict:
    """full / linear_probe / lp_ft / lora on both hub bases pushed with push_to_hub; lora also merged; one private
    branch."""
    since = len(hub.requests)
    result = run_py(PUSH_CODE.format(work=str(work), bases=BASES, methods=METHODS), hf_env(hub, work / "push-cache"))
    result["requests_since"] = since
    return result


PULL_CODE = """
import torch
from hftransfer import AutoTransfer

refs = torch.load({refs!r})
out = {{"diff": {{}}, "info": {{}}, "errors": {{}}}}
for key, ref in refs.items():
    repo, _, revision = key.partition("@")
    model = AutoTransfer.from_pretrained(repo, revision=revision or None).eval()
    with torch.no_grad():
        logits = model(**ref["batch"]).logits
    out["diff"][key] = float((logits - ref["logits"]).abs().max())
    out["info"][key] = {{"method": model.method.name, "labels": model.id2label, "source": model.backbone.spec.source}}
if {errors!r}:
    load = AutoTransfer.from_pretrained
    out["errors"] = {{
        "pickle_only": error_of(load, "tester/pickle-only", num_labels=2),
        "not_a_model": error_of(load, "tester/not-a-model", num_labels=2),
        "foreign_config": error_of(load, "tester/foreign-config"),
        "missing_base_repo": error_of(load, "tester/orphan"),
        "missing_base_revision": error_of(load, "tester/orphan-revision"),
        "private_anonymous": error_of(load, "tester/private-branch", revision="dev", token=False),
        "private_main_has_no_model": error_of(load, "tester/private-branch"),
        "missing_revision": error_of(load, "tester/bert-lora", revision="nope"),
    }}
print(json.dumps(out))
"""


def _seed_broken_repos(hub: HubServer) -> None:
    """Repos a pull must refuse clearly: pickle-only, not a model, foreign config, adapter whose base is gone."""
    bert_config = hub.file_bytes(BASES["bert"], "config.json")
    hub.create_repo("tester/pickle-only")
    hub.upload_files("tester/pickle-only", {"config.json": bert_config, "pytorch_model.bin": b"PK\x03\x04 pickle"})
    hub.create_repo("tester/not-a-model")
    hub.upload_files("tester/not-a-model", {"README.md": b"# Just notes\n", "notes.txt": b"hello"})
    hub.create_repo("tester/foreign-config")
    hub.upload_files("tester/foreign-config", {"hftransfer_config.json": b'{"format": "something-else"}'})
    files = {path: hub.file_bytes("tester/bert-lora", path) for path in hub.list_files("tester/bert-lora")
             if path != ".gitattributes"}
    for repo_id, change in (("tester/orphan", {"name": "tester/deleted-base"}),
                            ("tester/orphan-revision", {"revision": "0" * 40})):
        config = json.loads(files["hftransfer_config.json"])
        config["backbone"].update(change)
        hub.create_repo(repo_id)
        hub.upload_files(repo_id, {**files, "hftransfer_config.json": json.dumps(config).encode()})


@pytest.fixture(scope="module")
def pulled(pushed: dict, hub: HubServer, work: Path) -> dict:
    """Every pushed repo pulled in a fresh process with an empty cache; then the broken repos."""
    _seed_broken_repos(hub)
    since = len(hub.requests)
    result = run_py(PULL_CODE.format(refs=str(work / "refs.pt"), errors=True), hf_env(hub, work / "pull-cache"))
    result["requests"] = hub.requests[since:]
    return result


@pytest.fixture(scope="module")
def pulled_offline(pulled: dict, hub: HubServer, work: Path) -> dict:
    """The same pulls again with HF_HUB_OFFLINE=1, from the cache the online pull filled."""
    since = len(hub.requests)
    env = {**hf_env(hub, work / "pull-cache"), "HF_HUB_OFFLINE": "1"}
    result = run_py(PULL_CODE.format(refs=str(work / "refs.pt"), errors=False), env)
    result["requests"] = hub.requests[since:]
    return result


TRAIN_CODE = """
import hftransfer

result = hftransfer.train({{
    "recipe": "full",
    "model": {{"name": "timm:test_convnext", "pretrained": False, "image_size": 32}},
    "data": {{"source": "sklearn_digits", "max_train_samples": 60, "max_eval_samples": 30}},
    "epochs": 1, "batch_size": 16, "augment": "none", "progress_bar": False,
    "output_dir": {output_dir!r},
    "push_to_hub": True, "hub_repo_id": "tester/digits",
}})
print(json.dumps({{"model_dir": str(result.model_dir), "best_metric": result.best_metric}}))
"""


@pytest.fixture(scope="module")
def trained(hub: HubServer, work: Path) -> dict:
    """A real (tiny) training run with push_to_hub: true, the token coming from HF_TOKEN."""
    since = len(hub.requests)
    result = run_py(TRAIN_CODE.format(output_dir=str(work / "digits-run")), hf_env(hub, work / "train-cache"))
    result["commits"] = count(hub, "POST", "/api/models/tester/digits/commit/", since)
    return result


@pytest.fixture(scope="module")
def cli_repushed(trained: dict, hub: HubServer, work: Path) -> dict:
    """A user edits the card on the hub, then `hftransfer push OUTPUT_DIR --token ...` pushes the run again."""
    from huggingface_hub import ModelCard

    card = ModelCard(hub.file_bytes("tester/digits", "README.md").decode())
    card.data.license = "mit"
    card.data.tags = [*card.data.tags, "my-own-tag"]
    card.text = card.text.rstrip("\n") + "\n\n## Notes from the author\n\nUSER-EDIT-MARKER: works on scanned digits.\n"
    hub.upload_files("tester/digits", {"README.md": str(card).encode()}, message="Edit card on the hub")
    local_readme = Path(trained["model_dir"]) / "README.md"
    before = local_readme.read_bytes()
    since = len(hub.requests)
    proc = run_cli([str(work / "digits-run"), "--repo-id", "tester/digits", "--token", TOKEN,
                    "--commit-message", "Re-push from the CLI"], without_token(hf_env(hub, work / "cli-cache")))
    return {"proc": proc, "local_readme_unchanged": local_readme.read_bytes() == before,
            "commits": count(hub, "POST", "/api/models/tester/digits/commit/", since)}


# --- push -> pull round trips ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", list(BASES))
@pytest.mark.parametrize("method", METHODS)
def test_push_then_pull_in_fresh_process_gives_identical_logits(pulled, family, method):
    # push_to_hub -> from_pretrained(repo_id) with an empty cache rebuilds the same model: identical logits.
    repo = f"tester/{family}-{method}"
    assert pulled["diff"][repo] <= 1e-6, pulled["diff"][repo]
    assert pulled["info"][repo]["method"] == method
    assert pulled["info"][repo]["labels"] == {"0": "neg", "1": "pos", "2": "mixed"}


@pytest.mark.parametrize("family", list(BASES))
def test_adapter_repos_hold_trained_weights_and_fetch_base_at_recorded_revision(pushed, pulled, hub, family):
    # linear_probe/lora repos carry only the trained weights plus the base's source and exact commit.
    base = BASES[family]
    base_commit = hub.refs(base)["branches"]["main"]
    full_size = len(hub.file_bytes(f"tester/{family}-full", "model.safetensors"))
    for method in ("linear_probe", "lora"):
        repo = f"tester/{family}-{method}"
        files = hub.list_files(repo)
        assert "adapter_model.safetensors" in files and "model.safetensors" not in files, files
        assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl"))]
        assert len(hub.file_bytes(repo, "adapter_model.safetensors")) < full_size / 2
        config = json.loads(hub.file_bytes(repo, "hftransfer_config.json"))
        assert config["weights"] == "trained"
        assert config["backbone"]["source"] == "hub" and config["backbone"]["revision"] == base_commit
        assert pushed["models"][repo]["revision"] == base_commit
    full = json.loads(hub.file_bytes(f"tester/{family}-full", "hftransfer_config.json"))
    assert full["weights"] == "full" and "model.safetensors" in hub.list_files(f"tester/{family}-full")
    # The fresh pull downloaded the base weights at exactly that commit.
    fetched = [path for method, path in pulled["requests"] if method == "GET" and "/resolve/" in path]
    prefix = f"/{base}/resolve/{base_commit}/"
    assert [path for path in fetched if path.startswith(prefix) and path.endswith(".safetensors")], fetched


def test_each_push_is_one_commit_with_a_card(pushed, hub):
    # One commit per push (model + card together); the card names the base and the recipe.
    commits = count(hub, "POST", "/commit/", pushed["requests_since"])
    assert commits == len(pushed["models"]) + 3  # + the private branch push + two to tester/switch
    assert "model.safetensors" in pushed["switch_first"] and "adapter_model.safetensors" not in pushed["switch_first"]
    switched = hub.list_files("tester/switch")
    assert "adapter_model.safetensors" in switched and "model.safetensors" not in switched
    meta = hub.file_bytes("tester/bert-lora", "README.md").decode()
    assert "library_name: hftransfer" in meta and "base_model: tester/tiny-bert" in meta
    assert 'AutoTransfer.from_pretrained("tester/bert-lora")' in meta
    assert commit_title(hub, "tester/bert-lora") == "Upload hftransfer lora model (trained weights)"


@pytest.mark.parametrize("family", list(BASES))
def test_merged_lora_push_loads_as_plain_full_model(pushed, pulled, hub, family):
    # merge=True folds LoRA into the backbone on a copy: a standalone full model, equal logits, caller untouched.
    repo = f"tester/{family}-lora-merged"
    config = json.loads(hub.file_bytes(repo, "hftransfer_config.json"))
    assert config["weights"] == "full" and config["method"]["name"] == "full"
    files = hub.list_files(repo)
    assert "model.safetensors" in files and "adapter_model.safetensors" not in files
    assert pulled["info"][repo]["method"] == "full"
    assert pulled["diff"][repo] <= 1e-5
    assert pushed[f"{family}_caller_untouched"] is True


def test_private_repo_branch_and_commit_message(pushed, pulled, hub):
    # private=True, revision="dev" (created from main) and commit_message; only the token holder can pull it.
    repo = "tester/private-branch"
    assert hub.store.meta(("model", repo))["private"] is True
    assert hub.refs(repo)["branches"]["dev"] == pushed["private_oid"]
    assert "hftransfer_config.json" in hub.list_files(repo, revision="dev")
    assert hub.list_files(repo, revision="main") == [".gitattributes"]
    assert commit_title(hub, repo, "dev") == "Dev upload of the lora model"
    assert pulled["diff"][f"{repo}@dev"] <= 1e-6
    errors = pulled["errors"]
    assert "ModelNameError" in errors["private_anonymous"]["types"]
    assert "tester/private-branch" in errors["private_anonymous"]["message"]
    assert "HF_TOKEN" in errors["private_anonymous"]["message"]  # the hub says 404: the error says how to log in
    assert "ForeignFolderError" in errors["private_main_has_no_model"]["types"]


def test_pull_with_hf_hub_offline_uses_the_cache(pulled, pulled_offline):
    # HF_HUB_OFFLINE=1: the hftransfer repos and their base backbones load from the cache, without a request.
    assert pulled_offline["requests"] == []
    assert set(pulled_offline["diff"]) == set(pulled["diff"])
    for key, diff in pulled_offline["diff"].items():
        assert diff <= (1e-5 if key.endswith("-merged") else 1e-6), key


# --- training run with push_to_hub, card metadata, CLI re-push -------------------------------------------------------


def test_training_run_pushes_best_model_with_metrics_in_model_index(trained, hub, work):
    # push_to_hub: true in a recipe config pushes OUTPUT_DIR/model in one commit; model-index holds the metrics.
    assert trained["commits"] == 1
    files = hub.list_files("tester/digits")
    for name in ("hftransfer_config.json", "model.safetensors", "README.md", "confusion_matrix.png",
                 "training_curves.png"):
        assert name in files, files
    assert any(f.startswith("backbone/") for f in files)
    assert commit_title(hub, "tester/digits").startswith("hftransfer full: best accuracy=")
    final = json.loads((work / "digits-run" / "metrics.json").read_text())["final_eval"]
    meta = card_metadata(hub, "tester/digits", work)
    assert meta["library_name"] == "hftransfer" and "full" in meta["tags"]
    results = meta["model-index"][0]["results"]
    metrics = {m["type"]: m["value"] for r in results for m in r["metrics"]}
    assert results[0]["task"]["type"] == "image-classification"
    assert results[0]["dataset"]["split"] == "validation"
    scalars = {name: value for name, value in final.items() if isinstance(value, (int, float))}
    assert {"accuracy", "f1_macro", "top5_accuracy"} <= set(scalars)
    assert metrics == pytest.approx(scalars)  # every evaluate metric, under its own name


def test_cli_repush_keeps_user_edits_in_the_card(cli_repushed, hub, work):
    # `hftransfer push OUTPUT_DIR` finds model/, pushes in one commit and merges the card: user edits survive.
    proc = cli_repushed["proc"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tester/digits" in proc.stdout
    assert cli_repushed["commits"] == 1
    assert cli_repushed["local_readme_unchanged"]
    assert commit_title(hub, "tester/digits") == "Re-push from the CLI"
    readme = hub.file_bytes("tester/digits", "README.md").decode()
    assert "USER-EDIT-MARKER: works on scanned digits." in readme
    assert readme.count("<!-- hftransfer:begin results -->") == 1
    meta = card_metadata(hub, "tester/digits", work)
    assert meta["license"] == "mit"
    assert "my-own-tag" in meta["tags"] and "hftransfer" in meta["tags"]
    assert meta["model-index"][0]["results"]


def test_cli_push_of_a_folder_that_is_not_a_model_fails_clearly(hub, work):
    # A folder without hftransfer_config.json: exit code 2 and a message that says what to push instead.
    (work / "not-a-model").mkdir(exist_ok=True)
    proc = run_cli([str(work / "not-a-model"), "--repo-id", "tester/nothing"], hf_env(hub, work / "cli-cache"))
    assert proc.returncode == 2
    assert "has no hftransfer_config.json" in proc.stderr and "save_pretrained" in proc.stderr
    assert hub.store.meta(("model", "tester/nothing")) is None


# --- faults ----------------------------------------------------------------------------------------------------------


FAULT_CODE = """
import hashlib
from huggingface_hub import HfApi
from hftransfer.hub import push_folder

api = HfApi()
token = os.environ["PUSH_TOKEN"]
W = Path({work!r})

def digest(folder):
    return {{p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}}

def remote(repo):
    return {{"sha": api.repo_info(repo, token=token).sha, "files": api.list_repo_files(repo, token=token)}}

out = {{}}
local = {{name: digest(W / name) for name in ("fault-B", "fault-C")}}
steps = [("c1", "fault-C", "tester/faulty-new"), ("b1", "fault-B", "tester/faulty"),
         ("b2", "fault-B", "tester/faulty")]
for step, name, repo in steps:
    out[step] = {{"error": error_of(push_folder, W / name, repo, token=token)}}
    out[step]["remote"] = remote(repo)
    out[step]["local_intact"] = digest(W / name) == local[name]
out["b3"] = {{"oid": push_folder(W / "fault-B", "tester/faulty", token=token).oid, "remote": remote("tester/faulty")}}
out["c2"] = {{"oid": push_folder(W / "fault-C", "tester/faulty-new", token=token).oid}}
print(json.dumps(out))
"""


def test_failed_uploads_leave_local_folder_and_remote_intact_and_retry_succeeds(hub, work):
    # 403 on the LFS PUT, a dropped PUT (retried by the client) then 500 on the commit, a dropped commit: no commit
    # is made, the repo keeps its previous model, the local folder is untouched; pushing again succeeds.
    from hftransfer import AutoTransfer

    for seed, name in enumerate(("fault-A", "fault-B", "fault-C")):
        torch.manual_seed(seed)
        AutoTransfer.from_pretrained("timm:test_resnet", num_labels=2, pretrained=False).save_pretrained(work / name)
    hub.create_repo("tester/faulty")
    version_a = hub.upload_files("tester/faulty", {rel: (work / "fault-A" / rel).read_bytes()
                                                   for rel in folder_digest(work / "fault-A")}, message="version A")
    files_a = hub.list_files("tester/faulty")
    hub.fail_next("lfs_put", status=403)
    hub.drop_next("lfs_put")
    hub.fail_next("commit", status=500)
    hub.drop_next("commit")
    env = {**without_token(hf_env(hub, work / "fault-cache")), "PUSH_TOKEN": TOKEN}
    result = run_py(FAULT_CODE.format(work=str(work)), env)

    c1 = result["c1"]  # new repo, LFS PUT refused: the repo exists but holds no model
    assert "HubPushError" in c1["error"]["types"] and "retry" in c1["error"]["message"]
    assert c1["remote"]["files"] == [".gitattributes"] and c1["local_intact"]
    for step in ("b1", "b2"):  # existing repo: commit 500, then dropped commit; version A stays
        assert "HubPushError" in result[step]["error"]["types"], step
        assert "previous version" in result[step]["error"]["message"]
        assert result[step]["remote"] == {"sha": version_a, "files": files_a}, step
        assert result[step]["local_intact"], step
    assert "500" in result["b1"]["error"]["message"]
    assert result["b3"]["oid"] == hub.refs("tester/faulty")["branches"]["main"] != version_a
    for repo_id, name in (("tester/faulty", "fault-B"), ("tester/faulty-new", "fault-C")):
        assert hub.file_bytes(repo_id, "model.safetensors") == (work / name / "model.safetensors").read_bytes()
    assert count(hub, "PUT", "/lfs-upload/") >= 3  # refused, dropped + retried, then C's retry


# --- clear errors ----------------------------------------------------------------------------------------------------


def test_pulling_what_is_not_an_hftransfer_model_gives_clear_errors(pulled):
    # Pickle-only repo, not a model, foreign config, missing base repo or revision, missing revision.
    errors = pulled["errors"]
    assert "UnsafeCheckpointError" in errors["pickle_only"]["types"]
    assert "allow_pickle=True" in errors["pickle_only"]["message"]
    assert "ForeignFolderError" in errors["not_a_model"]["types"]
    assert "tester/not-a-model" in errors["not_a_model"]["message"]
    assert "ForeignFolderError" in errors["foreign_config"]["types"]
    assert "tester/foreign-config" in errors["foreign_config"]["message"]
    assert "not an hftransfer model config" in errors["foreign_config"]["message"]
    for key, needle in (("missing_base_repo", "tester/deleted-base"), ("missing_base_revision", "0" * 40)):
        message = errors[key]["message"]
        assert "ModelNameError" in errors[key]["types"], key
        assert "base backbone" in message and needle in message and "full_weights=True" in message, message
    assert "ModelNameError" in errors["missing_revision"]["types"]
    assert "nope" in errors["missing_revision"]["message"]


def test_push_validates_folder_and_arguments_before_any_upload(tmp_path, tiny_models):
    # Clear errors without touching the hub: bad folders, pickles, unfetchable bases, repo ids, revisions, offline.
    from hftransfer import AutoTransfer
    from hftransfer.errors import ConfigurationError, ForeignFolderError, OfflineError, UnsafeCheckpointError
    from hftransfer.hub import plan_upload, push_folder
    from hftransfer.hub.push import _refuse_token_in_files

    with pytest.raises(ForeignFolderError, match="does not exist"):
        plan_upload(tmp_path / "missing")
    model = AutoTransfer.from_pretrained("timm:test_resnet", num_labels=2, pretrained=False)
    model.save_pretrained(tmp_path / "run" / "model")
    with pytest.raises(ForeignFolderError, match=r"training output_dir: push .*model"):
        plan_upload(tmp_path / "run")

    folder = tmp_path / "run" / "model"
    (folder / "train.log").write_text("log")
    (folder / ".cache").mkdir()
    (folder / ".cache" / "x.lock").write_text("")
    plan = plan_upload(folder)
    assert "hftransfer_config.json" in plan.files and "model.safetensors" in plan.files
    assert any(f.startswith("backbone/") for f in plan.files)
    assert plan.skipped == [".cache/x.lock", "train.log"]

    (folder / "optimizer.pt").write_bytes(b"pickle")
    with pytest.raises(UnsafeCheckpointError, match=r"optimizer\.pt.*safetensors only"):
        plan_upload(folder)
    (folder / "optimizer.pt").unlink()

    (folder / "notes.json").write_text(json.dumps({"hub_token": TOKEN}))
    with pytest.raises(ConfigurationError, match=r"notes\.json.*token"):
        _refuse_token_in_files(plan_upload(folder), "card", TOKEN)
    with pytest.raises(ConfigurationError, match="README.md"):
        _refuse_token_in_files(plan_upload(tmp_path / "run" / "model"), f"token: {TOKEN}", TOKEN)
    (folder / "notes.json").unlink()

    (folder / "model.safetensors").unlink()
    with pytest.raises(ForeignFolderError, match=r"lacks model\.safetensors"):
        plan_upload(folder)

    # A local base cannot be re-fetched by whoever pulls: adapter-only folders with one are refused.
    probe = AutoTransfer.from_pretrained(tiny_models["transformers_bert"], num_labels=2, method="linear_probe")
    probe.save_pretrained(tmp_path / "probe", full_weights=False)
    with pytest.raises(ConfigurationError, match="full_weights=True"):
        plan_upload(tmp_path / "probe")
    with pytest.raises(ConfigurationError, match="nothing to merge"):
        probe.push_to_hub("tester/probe", merge=True)

    model.save_pretrained(folder)
    with pytest.raises(ConfigurationError, match="repo_id="):
        push_folder(folder, "not a/valid/repo")
    with pytest.raises(ConfigurationError, match="branch name"):
        push_folder(folder, "tester/x", revision="a" * 40)
    with pytest.raises(OfflineError, match="HF_HUB_OFFLINE"):  # conftest sets HF_HUB_OFFLINE=1 for this process
        push_folder(folder, "tester/x")


def test_token_is_never_written_anywhere(pushed, pulled, trained, cli_repushed, hub, work):
    # The token reached the server in headers only: not in any stored file, output folder, cache or log.
    secret = TOKEN.encode()
    assert hub.token == TOKEN
    assert not [i for i, data in enumerate(hub.all_stored_bytes()) if secret in data]
    leaked = [str(p) for p in work.rglob("*") if p.is_file() and not p.is_symlink() and secret in p.read_bytes()]
    assert leaked == []
    assert not [log for log in LOGS if TOKEN in log]


RESOLVE_CODE = """
import torch
from hftransfer import AutoTransfer

out = {}
for name in ("test_vit", "timm/test_vit.r160_in1k", "hf-hub:tester/tiny-vit", "tester/tiny-vit", "tester/tiny-bert"):
    model = AutoTransfer.from_pretrained(name, num_labels=2)
    spec = model.backbone.spec
    first = next(iter(model.backbone.model.state_dict().values()))
    out[name] = {"family": spec.family, "name": spec.name, "revision": spec.revision, "source": spec.source,
                 "first_sum": float(first.double().sum())}
print(json.dumps(out))
"""


def test_hub_names_resolve_to_the_right_family_and_exact_revision(hub, work):
    # Bare timm architectures, timm/ and hf-hub: ids, and repo ids told apart by config.json all load from the hub
    # with the commit they came from recorded in the spec (and the pretrained weights, not a random init).
    import timm
    from timm.models import save_for_hf

    torch.manual_seed(3)
    vit = timm.create_model("test_vit", pretrained=False)
    save_for_hf(vit, str(work / "seed-timm-org"), safe_serialization=True)
    hub.create_repo("timm/test_vit.r160_in1k")
    hub.upload_files("timm/test_vit.r160_in1k",
                     {p.name: p.read_bytes() for p in (work / "seed-timm-org").iterdir() if p.is_file()})
    got = run_py(RESOLVE_CODE, hf_env(hub, work / "cache-resolve"))
    commit = {repo: hub.refs(repo)["branches"]["main"] for repo in
              ("timm/test_vit.r160_in1k", "tester/tiny-vit", "tester/tiny-bert")}
    expected_sum = float(next(iter(vit.state_dict().values())).double().sum())
    assert got["test_vit"]["name"] == "timm/test_vit.r160_in1k"
    for name in ("test_vit", "timm/test_vit.r160_in1k"):
        assert got[name]["family"] == "timm" and got[name]["revision"] == commit["timm/test_vit.r160_in1k"]
        assert got[name]["first_sum"] == pytest.approx(expected_sum)
    for name in ("hf-hub:tester/tiny-vit", "tester/tiny-vit"):
        assert got[name]["family"] == "timm" and got[name]["revision"] == commit["tester/tiny-vit"]
    assert got["tester/tiny-bert"]["family"] == "transformers"
    assert got["tester/tiny-bert"]["revision"] == commit["tester/tiny-bert"]
