"""Training config: one help text per option, value checks at build time, example configs found from anywhere."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from hftransfer.errors import ConfigurationError, HFTransferError, InputFileError
from hftransfer.methods.registry import METHODS
from hftransfer.recipes.examples import example_configs, resolve_config
from hftransfer.recipes.registry import as_recipe
from hftransfer.training import ModelConfig, OptimConfig, SchedulerConfig, TrainConfig, UnfreezeStage
from hftransfer.training.config import OPTIMIZER_NAMES, SCHEDULER_NAMES, config_help


REPO = Path(__file__).resolve().parents[1]
CONFIG_CLASSES = [TrainConfig, ModelConfig, OptimConfig, SchedulerConfig, UnfreezeStage,
                  *(entry.config_cls for entry in METHODS.values())]


@pytest.mark.parametrize("cls", CONFIG_CLASSES, ids=lambda c: c.__name__)
def test_every_config_field_has_help(cls):
    # One style everywhere: field(default=..., metadata={"help": ...}); the help is what --help-config prints.
    for f in dataclasses.fields(cls):
        assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no metadata help"


def test_help_config_lists_every_option_with_its_help(capsys):
    from hftransfer.cli import main

    text = config_help()
    for line in ("  optim.backbone_lr_scale (float, default 1.0): Discriminative LR",
                 "  data.validation_split (float, default 0.15): ",
                 "  method.train_norms (bool, default False): Also train the backbone's norm layers",
                 "  image_cache_mb (float, default 2048): "):
        assert line in text, line
    assert main(["train", "--help-config"]) == 0
    assert capsys.readouterr().out.strip() == text.strip()


@pytest.mark.parametrize(("data", "message"), [
    ({"optim": {"lr": -1e-3}}, r"optim\.lr=-0\.001 is invalid: a learning rate is >= 0"),
    ({"optim": {"lr": "fast"}}, r"optim\.lr='fast' must be a number"),
    ({"optim": {"name": "adam"}}, r"optim\.name='adam' is invalid: use one of \['adamw', 'sgd'\]"),
    ({"optim": {"layer_decay": 1.5}}, r"optim\.layer_decay=1\.5"),
    ({"scheduler": {"gamma": 0}}, r"scheduler\.gamma=0\.0"),
    ({"scheduler": {"warmup_ratio": 1.5}}, r"scheduler\.warmup_ratio=1\.5"),
    ({"model": {"head_dropout": 1.0}}, r"model\.head_dropout=1\.0"),
    ({"model": {"pooling": "max"}}, r"model\.pooling='max'"),
    ({"epochs": 0}, r"epochs=0 is invalid"),
    ({"max_steps": 0}, r"max_steps=0 is invalid"),
    ({"image_cache_mb": -1}, r"image_cache_mb=-1\.0 is invalid"),
    ({"augment": "autoaugment"}, r"augment='autoaugment' is invalid: use one of \['default', 'none', "
                                 r"'randaugment', 'randaugment_upright', 'upright'\]"),
    ({"metric_for_best": "acc"}, r"metric_for_best='acc' is invalid: use one of \['loss', 'accuracy', 'f1_macro'"),
    ({"push_to_hub": True}, r"push_to_hub=true needs hub_repo_id"),
    ({"push_to_hub": True, "hub_repo_id": "a/b/c"}, r"hub_repo_id='a/b/c' is invalid"),
    ({"unfreeze_schedule": [{"epoch": -1, "train": "all"}]}, r"unfreeze_schedule\[\]\.epoch=-1"),
    ({"recipe": "lora", "method": {"rank": 4}}, r"Unknown method option\(s\) \['method\.rank'\] for LoraMethodConfig"),
    ({"recipe": "lora", "method": {"r": 0}}, r"method\.r=0 is invalid for lora"),
    ({"recipe": "linear_probe", "method": {"r": 8}}, r"written for another recipe"),
])
def test_invalid_values_fail_when_the_config_is_built(data, message):
    # Every value check runs in the config dataclasses, so a bad value fails before any model or data is loaded.
    with pytest.raises(ConfigurationError, match=message):
        TrainConfig.from_dict(data)


def test_metric_for_best_accepts_what_the_metrics_module_computes():
    import numpy as np

    from hftransfer.metrics import classification_metric_names, compute_classification_metrics

    logits = np.random.default_rng(0).normal(size=(20, 10))
    labels = np.arange(20) % 10
    assert list(compute_classification_metrics(logits, labels, [str(i) for i in range(10)])) == \
        classification_metric_names(10)
    for name in ["loss", *classification_metric_names()]:
        assert TrainConfig.from_dict({"metric_for_best": name}).metric_for_best == name


def test_optimizer_and_scheduler_names_match_their_implementations():
    from hftransfer.training.optim import OPTIMIZERS, SCHEDULES

    assert set(OPTIMIZERS) == set(OPTIMIZER_NAMES)
    assert set(SCHEDULES) == set(SCHEDULER_NAMES)


def test_example_configs_resolve_by_name_from_any_folder(tmp_path, monkeypatch):
    # The shipped examples are package data: `demo_digits`, `demo_digits.yaml` and the README's
    # `recipes/configs/demo_digits.yaml` all find them, even outside the repo.
    shipped = example_configs()
    assert {p.name for p in (REPO / "recipes" / "configs").glob("*.yaml")} == set(shipped)
    monkeypatch.chdir(tmp_path)
    for name in ("demo_digits", "demo_digits.yaml", "recipes/configs/demo_digits.yaml"):
        assert resolve_config(name) == shipped["demo_digits.yaml"]
        assert TrainConfig.from_yaml(name).data.source == "sklearn_digits"
    (tmp_path / "demo_digits.yaml").write_text("recipe: lora\n")  # a local file always wins
    assert TrainConfig.from_yaml("demo_digits.yaml").recipe == "lora"
    with pytest.raises(InputFileError, match=r"config='nope\.yaml' is not a file or a shipped example"):
        TrainConfig.from_yaml("nope.yaml")
    assert resolve_config("elsewhere/demo_digits.yaml") == Path("elsewhere/demo_digits.yaml")


def test_bad_yaml_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("recipe: [full\n")
    with pytest.raises(ConfigurationError, match="bad.yaml.*is not valid YAML"):
        TrainConfig.from_yaml(bad)


def test_a_config_for_one_recipe_runs_as_another():
    # What `python -m hftransfer.recipes ... recipe=NAME` does with a config written for another recipe: everything
    # carries over except the method options the new method does not take, which are reported.
    lora = TrainConfig.from_yaml(REPO / "recipes" / "configs" / "efficientnet_lite0_hymenoptera_lora.yaml").to_dict()
    data, dropped = as_recipe(lora, "linear_probe")
    assert dropped == ["alpha", "r", "train_norms"]
    config = TrainConfig.from_dict(data)
    assert config.recipe == "linear_probe" and config.method == {}
    assert config.optim.lr == lora["optim"]["lr"] and config.data.source == lora["data"]["source"]
    data, dropped = as_recipe({"recipe": "linear_probe", "method": {"cache_features": False}}, "lora")
    assert dropped == ["cache_features"] and TrainConfig.from_dict(data).method == {}  # lora's own defaults


def test_the_launch_module_refuses_bad_input_before_training(capsys, monkeypatch):
    # python -m hftransfer.recipes: errors name the setting (exit 2, no traceback) before any data or model loads.
    from hftransfer.recipes import launch
    from hftransfer.recipes.launch import main

    monkeypatch.setattr(launch, "train", lambda data: pytest.fail(f"trained {data}"))
    assert main(["--config", "demo_digits", "recipe=nope"]) == 2
    assert "python -m hftransfer.recipes: error: Unknown recipe 'nope'" in capsys.readouterr().err
    assert main(["--config", "no_such_config.yaml"]) == 2
    assert "config='no_such_config.yaml' is not a file or a shipped example" in capsys.readouterr().err
    trained = []
    monkeypatch.setattr(launch, "train", trained.append)
    lora = str(REPO / "recipes" / "configs" / "efficientnet_lite0_hymenoptera_lora.yaml")
    assert main(["--config", lora, "recipe=linear_probe", "epochs=2"]) == 0
    assert trained[0]["recipe"] == "linear_probe" and trained[0]["method"] == {} and trained[0]["epochs"] == 2
    assert "has no method option(s) ['alpha', 'r', 'train_norms']: they were dropped" in capsys.readouterr().err


def test_config_errors_are_hftransfer_errors():
    # The CLI prints HFTransferError messages and lets anything else (a bug) show its traceback.
    from hftransfer.data import DataError

    assert issubclass(ConfigurationError, HFTransferError) and issubclass(DataError, HFTransferError)
    with pytest.raises(HFTransferError):
        TrainConfig.from_dict({"optim": {"lrr": 1}})
