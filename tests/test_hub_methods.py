"""Push and pull each parameter-efficient method family through the local hub server (see test_hub_push.py).

Families: bottleneck / residual-conv adapters (``adapter``), scaling vectors (``ia3``), LyCORIS low-rank updates
(``loha``), orthogonal transforms (``boft``) and shared random projections (``vera``). Each repo holds only the
trained weights and the base reference, and a fresh process with an empty cache rebuilds identical logits; the
mergeable ones also push merged (a plain full model), and ``adapter`` refuses a merged push with its reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import HUB_BASES, run_py
from hub_server import HubServer, hf_env


pytestmark = pytest.mark.integration

BASES = HUB_BASES
PUSHES = [("timm", "adapter"), ("bert", "adapter"), ("bert", "ia3"), ("timm", "loha"), ("bert", "boft"),
          ("bert", "vera"), ("bert", "lokr"), ("timm", "oft"), ("bert", "dora"), ("timm", "dora"),
          ("bert", "prefix_key_value")]
# pushed variants: (method, options)
METHOD_OF = {"dora": ("lora", {"use_dora": True, "r": 4}),
             "prefix_key_value": ("prefix_tuning", {"form": "key_value", "num_virtual_tokens": 3})}
MERGED = [("bert", "ia3"), ("timm", "loha"), ("bert", "boft")]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hub_methods")


PUSH_CODE = """
import torch
from hftransfer import AutoTransfer

W = Path({work!r})
BASES, PUSHES, MERGED, METHOD_OF = {bases!r}, {pushes!r}, {merged!r}, {method_of!r}

def batch(model):
    if model.modality == "image":
        return {{"pixel_values": torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(0))}}
    return dict(model.preprocess(["a good movie", "the film was very dull"]))

refs, out = {{}}, {{"errors": {{}}}}
for family, method in PUSHES:
    name, options = METHOD_OF.get(method, (method, {{}}))
    model = AutoTransfer.from_pretrained(BASES[family], id2label={{0: "neg", 1: "pos"}}, method=name,
                                         method_config=options).eval()
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    inputs = batch(model)
    with torch.no_grad():
        logits = model(**inputs).logits
    repo = f"tester/{{family}}-{{method}}"
    model.push_to_hub(repo)
    refs[repo] = {{"batch": inputs, "logits": logits}}
    if [family, method] in MERGED:
        model.push_to_hub(repo + "-merged", merge=True)
        refs[repo + "-merged"] = {{"batch": inputs, "logits": logits}}
    if method == "adapter":
        out["errors"][repo] = error_of(model.push_to_hub, repo + "-merged", merge=True)
torch.save(refs, W / "refs.pt")
print(json.dumps(out))
"""

PULL_CODE = """
import torch
from hftransfer import AutoTransfer

refs = torch.load({refs!r})
out = {{}}
for repo, ref in refs.items():
    model = AutoTransfer.from_pretrained(repo).eval()
    with torch.no_grad():
        logits = model(**ref["batch"]).logits
    out[repo] = {{"diff": float((logits - ref["logits"]).abs().max()), "method": model.method.name}}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def pushed(hub: HubServer, work: Path) -> dict:
    code = PUSH_CODE.format(work=str(work), bases=BASES, pushes=[list(p) for p in PUSHES],
                            merged=[list(m) for m in MERGED], method_of=METHOD_OF)
    return run_py(code, hf_env(hub, work / "push-cache"))


@pytest.fixture(scope="module")
def pulled(pushed: dict, hub: HubServer, work: Path) -> dict:
    return run_py(PULL_CODE.format(refs=str(work / "refs.pt")), hf_env(hub, work / "pull-cache"))


@pytest.mark.parametrize(("family", "method"), PUSHES)
def test_push_then_pull_gives_identical_logits_from_trained_weights_only(pulled, hub, family, method):
    repo = f"tester/{family}-{method}"
    name, options = METHOD_OF.get(method, (method, {}))
    assert pulled[repo]["method"] == name
    assert pulled[repo]["diff"] <= 1e-6, pulled[repo]
    files = hub.list_files(repo)
    assert "adapter_model.safetensors" in files and "model.safetensors" not in files, files
    config = json.loads(hub.file_bytes(repo, "hftransfer_config.json"))
    assert config["weights"] == "trained" and config["method"]["name"] == name
    assert {k: config["method"]["config"][k] for k in options} == options, config["method"]
    assert config["backbone"]["revision"] == hub.refs(BASES[family])["branches"]["main"]


@pytest.mark.parametrize(("family", "method"), MERGED)
def test_merged_push_is_a_plain_full_model_with_the_same_logits(pulled, hub, family, method):
    repo = f"tester/{family}-{method}-merged"
    assert pulled[repo]["method"] == "full"
    assert pulled[repo]["diff"] <= 1e-4, pulled[repo]
    assert "model.safetensors" in hub.list_files(repo)


def test_adapter_merged_push_is_refused_with_the_reason(pushed, hub):
    # Refused before any upload: no "-merged" repo was ever created for the adapter models.
    for family in ("timm", "bert"):
        error = pushed["errors"][f"tester/{family}-adapter"]
        assert error is not None and "ConfigurationError" in error["types"] and "nonlinear" in error["message"]
        assert hub.store.meta(("model", f"tester/{family}-adapter-merged")) is None
