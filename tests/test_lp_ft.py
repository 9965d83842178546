"""LP-FT: the ``lp_ft`` method's options, its head warm-up (a linear probe on frozen features) and a whole run."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

import hftransfer
from hftransfer.data import load_data
from hftransfer.errors import ConfigurationError
from hftransfer.methods import get_method, list_methods
from hftransfer.methods.base import HeadWarmup
from hftransfer.modeling import AutoTransfer
from hftransfer.recipes.listing import example_yaml, recipe_lines
from hftransfer.training.accelerator import build_accelerator
from hftransfer.training.config import TrainConfig
from hftransfer.training.head_warmup import warm_up_head

from helpers import REPO, accelerate_launch, cpu_env, text_csv, tiny_config


def _setup(tmp_path, recipe: str = "lp_ft", **overrides):
    """A tiny ``recipe`` model fitted to 64 digits, its data, an accelerator and the run config (what the trainer's
    set-up holds when the head warm-up runs)."""
    config = TrainConfig.from_dict(tiny_config(tmp_path, recipe=recipe, **overrides))
    data = load_data(config.data)
    torch.manual_seed(0)
    model = AutoTransfer.from_pretrained(config.model.name, num_labels=2, pretrained=False)
    model.apply_method(recipe, config.method)
    model.reset_head(data.id2label)
    model.method.set_trainable(model)
    if config.model.image_size:
        model.backbone.preprocessor = model.preprocessor.with_image_size(config.model.image_size)
    return model, data, build_accelerator("no"), config


def test_lp_ft_is_registered_and_asks_for_a_head_warmup():
    assert "lp_ft" in list_methods()
    method = get_method("lp_ft", {"probe_epochs": 7, "probe_lr": 0.05, "feature_precision": "fp32"})
    assert method.head_warmup() == HeadWarmup(epochs=7, lr=0.05, weight_decay=1e-4, feature_precision="fp32")
    assert method.saves_full_weights and method.trains_backbone
    assert get_method("full").head_warmup() is None and get_method("linear_probe").head_warmup() is None


@pytest.mark.parametrize(("options", "named"), [
    ({"probe_epochs": 0}, "method.probe_epochs=0"),
    ({"probe_epochs": 2.5}, "method.probe_epochs"),
    ({"probe_lr": 0}, "method.probe_lr=0"),
    ({"probe_weight_decay": -1}, "method.probe_weight_decay=-1"),
    ({"feature_precision": "fp16"}, "method.feature_precision='fp16'"),
    ({"probe_epoch": 3}, "method.probe_epoch"),
])
def test_invalid_options_are_refused_naming_the_option(options, named):
    with pytest.raises((ConfigurationError, ValueError)) as err:
        get_method("lp_ft", options)
    assert named in str(err.value)


def test_probe_fits_the_head_and_leaves_the_backbone_unchanged(tmp_path):
    model, data, acc, config = _setup(tmp_path, **{"method.probe_epochs": 60})
    backbone = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head = {k: v.clone() for k, v in model.head.state_dict().items()}
    lines = []
    stats = warm_up_head(model, data, acc, config, "no", lines.append)
    # The head learned the 10 digit classes from frozen random features (chance: ~0.1).
    assert stats["probe_train_loss"] < 0.5 * stats["probe_initial_train_loss"]
    assert stats["probe_train_accuracy"] >= stats["probe_initial_train_accuracy"] + 0.4
    assert stats["probe_rows"] == len(data.train) and stats["probe_seconds"] > 0
    assert any(k for k in head if not torch.equal(head[k], model.head.state_dict()[k]))
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, backbone[key]), key
    assert any(line.startswith("lp_ft: probe fitted") and "train accuracy" in line for line in lines)
    # Trainability is what the method set: everything, like full.
    assert all(p.requires_grad for p in model.parameters())


def test_probe_is_seeded_and_leaves_the_global_random_stream(tmp_path):
    heads = []
    for run in range(2):
        model, data, acc, config = _setup(tmp_path / str(run), **{"method.probe_epochs": 5})
        torch.manual_seed(123)
        warm_up_head(model, data, acc, config, "no", lambda _: None)
        heads.append((model.head.fc.weight.detach().clone(), torch.rand(3)))
    torch.testing.assert_close(heads[0][0], heads[1][0], rtol=0, atol=0)
    torch.manual_seed(123)
    assert torch.equal(heads[0][1], torch.rand(3))


def test_methods_without_a_warmup_are_untouched(tmp_path):
    model, data, acc, config = _setup(tmp_path, recipe="full")
    head = model.head.fc.weight.detach().clone()
    assert warm_up_head(model, data, acc, config, "no", lambda _: None) is None
    assert torch.equal(head, model.head.fc.weight)


@pytest.mark.integration
def test_a_run_starts_fine_tuning_from_the_fitted_probe(tmp_path):
    # the engine's set-up fits the probe before the optimizer exists; its stats reach metrics.json and the log
    config = tiny_config(tmp_path, recipe="lp_ft", epochs=1, **{"method.probe_epochs": 60})
    result = hftransfer.train(config)
    stats = json.loads((result.output_dir / "metrics.json").read_text())["head_warmup"]
    assert stats["probe_train_accuracy"] > stats["probe_initial_train_accuracy"] + 0.4
    assert stats["probe_epochs"] == 60
    assert "lp_ft: probe fitted" in (result.output_dir / "train.log").read_text()
    assert AutoTransfer.from_pretrained(result.model_dir).method.name == "lp_ft"
    plain = hftransfer.train(tiny_config(tmp_path / "full", recipe="full", epochs=1))
    assert "head_warmup" not in json.loads((plain.output_dir / "metrics.json").read_text())


TWO_PROCESS = textwrap.dedent("""
    import json, sys
    import torch
    from accelerate import PartialState
    sys.path.insert(0, {tests!r})
    from helpers import tiny_config
    from hftransfer.data import load_data
    from hftransfer.modeling import AutoTransfer
    from hftransfer.training.accelerator import build_accelerator
    from hftransfer.training.config import TrainConfig
    from hftransfer.training.head_warmup import warm_up_head
    from pathlib import Path

    out = Path(sys.argv[1])
    config = TrainConfig.from_dict(tiny_config(out, recipe="lp_ft", **{{"method.probe_epochs": 20}}))
    acc = build_accelerator("no")
    data = load_data(config.data)
    torch.manual_seed(0)
    model = AutoTransfer.from_pretrained(config.model.name, num_labels=2, pretrained=False)
    model.apply_method("lp_ft", config.method)
    model.reset_head(data.id2label)
    model.backbone.preprocessor = model.preprocessor.with_image_size(config.model.image_size)
    stats = warm_up_head(model, data, acc, config, "no", print)
    torch.save({{k: v for k, v in model.head.state_dict().items()}}, out / f"head{{acc.process_index}}.pt")
    (out / f"stats{{acc.process_index}}.json").write_text(json.dumps(stats))
""")


@pytest.mark.integration
def test_two_processes_fit_the_same_head_as_one(tmp_path):
    script = tmp_path / "warmup.py"
    script.write_text(TWO_PROCESS.format(tests=str(REPO / "tests")))
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    subprocess.run([sys.executable, str(script), str(tmp_path / "one")], check=True, env=cpu_env(), timeout=600)
    accelerate_launch(script, str(tmp_path / "two"))
    runs = (("one", 0), ("two", 0), ("two", 1))
    one, rank0, rank1 = (torch.load(tmp_path / d / f"head{r}.pt") for d, r in runs)
    stats = [json.loads((tmp_path / d / f"stats{r}.json").read_text()) for d, r in runs]
    assert stats[1]["probe_rows"] == stats[2]["probe_rows"] == stats[0]["probe_rows"]  # every row, gathered once
    for key in one:
        torch.testing.assert_close(rank0[key], rank1[key], rtol=0, atol=0)  # identical on every rank
        # Same features up to the sharded batches' float sums: the same probe.
        torch.testing.assert_close(rank0[key], one[key], rtol=1e-3, atol=1e-4)


def test_probe_runs_on_a_text_backbone(tmp_path, tiny_models):
    # Tokenized, padded batches through the same stage (a tiny random BERT's features barely separate the classes:
    # only the fitted loss is asserted here; the image tests check the accuracy).
    model, data, acc, config = _setup(tmp_path, **{
        "model.name": tiny_models["transformers_bert"], "model.image_size": None,
        "data": {"source": str(text_csv(tmp_path)), "validation_split": 0.25}, "method.probe_epochs": 20})
    backbone = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    stats = warm_up_head(model, data, acc, config, "no", lambda _: None)
    assert stats["probe_rows"] == len(data.train)
    assert stats["probe_train_loss"] < stats["probe_initial_train_loss"]
    assert all(torch.equal(v, backbone[k]) for k, v in model.backbone.state_dict().items())


@pytest.mark.parametrize("stats", ["update", "frozen"])
def test_norm_statistics_frozen_keeps_batchnorm_in_eval_mode_while_its_affine_parameters_train(stats):
    from torch import nn

    from hftransfer.methods import get_method
    from hftransfer.training.freezing import set_train_mode

    model = AutoTransfer.from_pretrained("timm:test_efficientnet", pretrained=False, num_labels=3)
    model.method = get_method("lp_ft", {"norm_statistics": stats})
    model.method.apply(model)
    set_train_mode(model, "all")
    norms = [m for m in model.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and all(p.requires_grad for m in norms for p in m.parameters(recurse=False))
    assert all(m.training == (stats == "update") for m in norms)
    assert get_method("lp_ft").freezes_norm_statistics and not get_method("full").freezes_norm_statistics
    before = [m.running_mean.clone() for m in norms]
    model(pixel_values=torch.randn(4, 3, 32, 32))
    changed = [not torch.equal(b, m.running_mean) for b, m in zip(before, norms)]
    assert all(changed) if stats == "update" else not any(changed)


# --- "probe first" as an option of the parameter-efficient methods (methods/head_probe.py) ---------------------------

@pytest.mark.parametrize("recipe", ["adapter", "prefix_tuning", "prompt_tuning"])
def test_probe_first_is_an_opt_in_option_of_the_parameter_efficient_methods(recipe):
    assert get_method(recipe).head_warmup() is None  # default: the head starts random, as before
    method = get_method(recipe, {"probe_epochs": 7, "probe_lr": 0.05, "feature_precision": "fp32"})
    assert method.head_warmup() == HeadWarmup(epochs=7, lr=0.05, weight_decay=1e-4, feature_precision="fp32")
    with pytest.raises(ConfigurationError, match=r"method\.probe_epochs=-1"):
        get_method(recipe, {"probe_epochs": -1})
    with pytest.raises(ConfigurationError, match=r"method\.feature_precision='fp16'"):
        get_method(recipe, {"probe_epochs": 3, "feature_precision": "fp16"})
    # `hftransfer recipes` lists the shared options, but its example shows the method's own (probe_lr alone does
    # nothing); lp_ft's own probe_epochs is shown
    assert "probe_epochs=0" in " ".join(recipe_lines(recipe)) and "probe" not in example_yaml(recipe)
    assert "probe_epochs: 100" in example_yaml("lp_ft")


def test_adapter_probe_fits_the_head_only_and_keeps_what_the_adapter_trains(tmp_path):
    model, data, acc, config = _setup(tmp_path, recipe="adapter", **{"method.probe_epochs": 60})
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stats = warm_up_head(model, data, acc, config, "no", lambda _: None)
    assert stats["probe_train_accuracy"] >= stats["probe_initial_train_accuracy"] + 0.4
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("head.") for k in changed), sorted(changed)
    # the adapters and the head train afterwards, the backbone stays frozen: what the method set, untouched
    assert {n for n, p in model.named_parameters() if p.requires_grad} == trained
    assert any(".hft_adapter." in n for n in trained) and not any(n.startswith("backbone.") and ".hft_adapter."
                                                                    not in n for n in trained)


def test_an_adapter_run_with_probe_epochs_fits_the_head_first_and_reloads(tmp_path):
    # the engine asks any method for its head-only stage; the option is saved with the model and reloads
    config = tiny_config(tmp_path, recipe="adapter", epochs=1, **{"method.probe_epochs": 40})
    result = hftransfer.train(config)
    stats = json.loads((result.output_dir / "metrics.json").read_text())["head_warmup"]
    assert stats["probe_epochs"] == 40 and stats["probe_train_accuracy"] > stats["probe_initial_train_accuracy"]
    assert "adapter: probe fitted" in (result.output_dir / "train.log").read_text()
    again = AutoTransfer.from_pretrained(result.model_dir)
    assert again.method.name == "adapter" and again.method.config.probe_epochs == 40
