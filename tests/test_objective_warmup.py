"""The source warm-up of the adaptation objectives (``objective.source_warmup``) and the per-modality objective
defaults (registered with the objective): the warm-up trains the plain source loss without drawing or
forwarding target batches, the adaptation term and its schedules start at its end, bad values fail clearly, text
backbones get the text defaults (the user's values win) and image backbones keep the dataclass defaults."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import hftransfer
from hftransfer import AutoTransfer
from hftransfer.errors import ConfigurationError
from hftransfer.objectives import OBJECTIVES, StepInfo, get_objective
from hftransfer.objectives.base import TEXT_SOURCE_WARMUP, adaptation_start
from hftransfer.objectives.layers import grl_coefficient
from hftransfer.training import Callback, TrainConfig
from hftransfer.training.domain import DomainRun

from helpers import da_config


class Counting(nn.Module):
    """The model, recording the batch size of every forward."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.batch_sizes = model, []

    def forward(self, **inputs):
        self.batch_sizes.append(next(iter(inputs.values())).shape[0])
        return self.model(**inputs)


class CountingStream:
    """An endless target stream that counts the batches drawn."""

    def __init__(self):
        self.drawn = 0

    def __next__(self):
        self.drawn += 1
        return {"pixel_values": torch.randn(8, 3, 32, 32) * 2 + 1}


class StepLogs(Callback):
    def __init__(self):
        self.steps: list[dict] = []

    def on_step_end(self, trainer, state):
        self.steps.append({"step": state.global_step, **trainer.domain.logs,
                           "position": trainer.domain.stream.state_dict()["position"]})


def _domain_run(objective) -> tuple[DomainRun, Counting, CountingStream, list[str]]:
    torch.manual_seed(0)
    model = AutoTransfer.from_pretrained("timm:test_convnext", num_labels=3, pretrained=False)
    objective.prepare_model(model)
    objective.bind(objective.trainable_modules(), model, torch.device("cpu"))
    messages: list[str] = []
    run = DomainRun(SimpleNamespace(source_only_baseline=None), objective, messages.append)
    run.stream = CountingStream()
    return run, Counting(model), run.stream, messages


def test_warmup_trains_the_source_loss_alone_then_the_grl_ramp_starts_at_its_end():
    # Fails when the warm-up forwards or draws target batches, adds the adaptation term, or when the GRL schedule is
    # not measured from the warm-up's end (0 there, then 2/(1+exp(-alpha p))-1 over the remaining steps).
    objective = get_objective({"name": "dann", "hidden_dim": 16, "source_warmup": 0.5})
    run, model, stream, messages = _domain_run(objective)
    run.plan(10)
    assert run.adaptation_start == 5 and any("switches on at step 5" in m for m in messages)
    source = {"pixel_values": torch.randn(8, 3, 32, 32)}
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    for step in range(5):
        loss = run.loss(model, source, labels, StepInfo(step, 10))
        with torch.no_grad():
            plain = F.cross_entropy(model.model(**source).logits.float(), labels)
        assert loss.item() == pytest.approx(plain.item(), rel=1e-6)
        assert run.logs["adapting"] == 0.0 and "domain_loss" not in run.logs
    assert stream.drawn == 0 and set(model.batch_sizes) == {8}  # no target batch drawn, none forwarded

    model.batch_sizes.clear()
    loss = run.loss(model, source, labels, StepInfo(5, 10))
    assert stream.drawn == 1 and model.batch_sizes == [16]  # source and target in one forward
    assert run.logs["adapting"] == 1.0 and run.logs["grl_coefficient"] == 0.0
    assert loss.item() == pytest.approx(run.logs["cls_loss"] + objective.config.weight * run.logs["domain_loss"],
                                        rel=1e-5)
    assert run.logs["domain_loss"] > 0
    assert any("adaptation term on from step 5" in m for m in messages)
    run.loss(model, source, labels, StepInfo(7, 10))
    assert run.logs["grl_coefficient"] == pytest.approx(grl_coefficient(2 / 5))


def test_no_warmup_keeps_the_old_schedule():
    objective = get_objective({"name": "dann", "hidden_dim": 16})
    assert objective.adaptation_step(StepInfo(3, 10)) == StepInfo(3, 10)
    run, _, _, messages = _domain_run(objective)
    run.plan(10)
    assert run.adaptation_start == 0 and not messages


def test_a_run_with_warmup_reads_no_target_until_it_ends_and_records_the_switch(tmp_path):
    # 32 digits / batch 8 = 4 steps per epoch, 2 epochs: warm-up 0.5 -> the adaptation starts at step 4.
    config = da_config(tmp_path, {"name": "dann", "hidden_dim": 16, "source_warmup": 0.5}, batch_size=8,
                       **{"data.max_train_samples": 32, "data.max_eval_samples": 8})
    del config["target_eval"]
    logs = StepLogs()
    result = hftransfer.train(config, callbacks=[logs])
    assert [s["adapting"] for s in logs.steps] == [0.0] * 4 + [1.0] * 4
    assert [s["position"] for s in logs.steps] == [0, 0, 0, 0, 1, 2, 3, 4]
    assert logs.steps[4]["grl_coefficient"] == 0.0
    metrics = json.loads((result.output_dir / "metrics.json").read_text())
    assert metrics["objective"]["source_warmup"] == 0.5 and metrics["objective"]["adaptation_start_step"] == 4
    assert "adaptation term on from step 4" in (result.output_dir / "train.log").read_text()
    # epoch 1 ended at step 4, before any adaptation step: it is the source-only model, no candidate for the best
    assert metrics["objective"]["warmup_epochs_not_selected"] == [1] and metrics["best_epoch"] == 2


def test_an_epoch_within_the_warmup_is_never_the_best_model_nor_stops_the_run(tmp_path):
    # greater_is_better on the loss would pick epoch 1 (the loss falls); with patience 1 epoch 2 would then stop the
    # run. Warm-up 0.75 of 12 steps: epochs 1 and 2 (steps 4, 8) end within it, epoch 3 is the only candidate.
    config = da_config(tmp_path, {"name": "coral", "source_warmup": 0.75}, batch_size=8, epochs=3,
                       metric_for_best="loss", greater_is_better=True, early_stopping_patience=1,
                       **{"data.max_train_samples": 32, "data.max_eval_samples": 8})
    result = hftransfer.train(config)
    metrics = json.loads((result.output_dir / "metrics.json").read_text())
    assert len(metrics["history"]) == 3 and metrics["best_epoch"] == 3
    assert metrics["objective"]["warmup_epochs_not_selected"] == [1, 2]
    log = (result.output_dir / "train.log").read_text()
    assert "epoch 1 ended within the source warm-up" in log and "epoch 3 ended within" not in log
    # without a warm-up the same config keeps epoch 1 and stops after epoch 2
    config = da_config(tmp_path / "no_warmup", {"name": "coral", "source_warmup": 0.0}, batch_size=8, epochs=3,
                       metric_for_best="loss", greater_is_better=True, early_stopping_patience=1,
                       **{"data.max_train_samples": 32, "data.max_eval_samples": 8})
    plain = json.loads((hftransfer.train(config).output_dir / "metrics.json").read_text())
    assert plain["best_epoch"] == 1 and len(plain["history"]) == 2
    assert "warmup_epochs_not_selected" not in plain["objective"]


@pytest.mark.parametrize("value", [-0.1, 1.0, 2, True, "half"])
def test_invalid_source_warmup_is_a_clear_configuration_error(tmp_path, value):
    config = da_config(tmp_path, {"name": "mmd", "source_warmup": value})
    with pytest.raises(ConfigurationError, match="objective.source_warmup"):
        TrainConfig.from_dict(config)


def test_text_backbones_get_the_text_defaults_and_user_values_win():
    for name in OBJECTIVES:
        text = get_objective(name, "text").config
        expected = {**get_objective(name).config.to_dict(), **OBJECTIVES[name].modality_defaults.get("text", {})}
        assert text.to_dict() == expected
    assert get_objective("dann", "text").config.source_warmup == TEXT_SOURCE_WARMUP > 0
    assert get_objective("dann", "text").config.weight < 1.0
    # A two-class text teacher's normalised entropy sits at 0.55-0.65 (bench/text_da.py): the image gate (0.5) held
    # back every pseudo-label there.
    assert get_objective("self_training", "text").config.gate_max_entropy == 0.7
    assert get_objective("self_training", "image").config.gate_max_entropy == 0.5
    # CORAL's text bottleneck uses LayerNorm (bench/results/text_da.md, session 22); images keep BatchNorm
    assert get_objective("coral", "text").config.norm == "layer"
    assert get_objective("coral", "image").config.norm == "batch"
    user = get_objective({"name": "dann", "weight": 1.0, "source_warmup": 0.0}, "text").config
    assert (user.weight, user.source_warmup) == (1.0, 0.0)


def test_modality_defaults_are_checked_at_registration():
    from hftransfer.objectives import register_objective
    from hftransfer.objectives.dann import DannConfig

    with pytest.raises(ConfigurationError, match="modality_defaults keys \\['audio'\\]"):
        register_objective("toy_objective", DannConfig, modality_defaults={"audio": {"weight": 0.1}})
    with pytest.raises(ConfigurationError, match="registration's modality_defaults\\['text'\\].*source_warmup"):
        register_objective("toy_objective", DannConfig, modality_defaults={"text": {"source_warmup": 1.5}})
    with pytest.raises(ConfigurationError, match="registration's modality_defaults\\['text'\\].*objective.wieght"):
        register_objective("toy_objective", DannConfig, modality_defaults={"text": {"wieght": 0.1}})
    assert "toy_objective" not in OBJECTIVES


def test_the_warmup_step_count_is_not_cut_by_float_error():
    assert adaptation_start(0.29, 100) == 29 and adaptation_start(0.57, 100) == 57  # int() gave 28 and 56
    assert adaptation_start(0.5, 108) == 54 and adaptation_start(0.25, 10) == 2 and adaptation_start(0.0, 7) == 0


def test_a_warmup_on_source_only_is_refused_as_meaningless(tmp_path):
    with pytest.raises(ConfigurationError, match="objective.source_warmup=0.5 has no effect for source_only"):
        TrainConfig.from_dict(da_config(tmp_path, {"name": "source_only", "source_warmup": 0.5}))


def test_image_backbones_keep_the_dataclass_defaults():
    for name, entry in OBJECTIVES.items():
        defaults = {f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
                    for f in dataclasses.fields(entry.config_cls)}
        assert get_objective(name, "image").config.to_dict() == defaults
        assert defaults["source_warmup"] == 0.0
    assert not any("image" in entry.modality_defaults for entry in OBJECTIVES.values())


def test_a_text_run_picks_up_the_text_defaults(tmp_path, tiny_models):
    rows = ["text,label"] + [f"the movie was very {w},{lab}" for w, lab in
                             [("good", "pos"), ("bad", "neg"), ("great", "pos"), ("awful", "neg")] * 8]
    (tmp_path / "src.csv").write_text("\n".join(rows) + "\n")
    target = ["text"] + [f"a film is not {w}" for w in ("fun", "dull", "good", "bad")] * 8
    (tmp_path / "tgt.csv").write_text("\n".join(target) + "\n")
    config = da_config(tmp_path, {"name": "dann", "hidden_dim": 16}, **{
        "model.name": tiny_models["transformers_bert"], "model.image_size": None,
        "data.source": str(tmp_path / "src.csv"), "data.max_train_samples": None, "data.max_eval_samples": None,
        "target.source": str(tmp_path / "tgt.csv"), "epochs": 2})
    del config["target_eval"]
    logs = StepLogs()
    result = hftransfer.train(config, callbacks=[logs])
    metrics = json.loads((result.output_dir / "metrics.json").read_text())
    text = OBJECTIVES["dann"].modality_defaults["text"]
    assert metrics["objective"]["weight"] == text["weight"]
    assert metrics["objective"]["source_warmup"] == text["source_warmup"]
    start = metrics["objective"]["adaptation_start_step"]
    assert start > 0 and [s["adapting"] for s in logs.steps] == [0.0] * start + [1.0] * (len(logs.steps) - start)
    # the card's hyperparameters show the values the run used, not only the `{name: dann}` the user wrote
    card = (result.model_dir / "README.md").read_text()
    assert f"| objective.weight | {text['weight']} |" in card
    assert f"| objective.source_warmup | {text['source_warmup']} |" in card


def test_a_one_row_source_batch_during_warmup_uses_the_running_statistics():
    # The last batch of an epoch can hold one row; during the warm-up only source rows go through the objective's
    # BatchNorm bottleneck, which cannot normalise one row in training mode ("Expected more than 1 value per channel").
    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))

        def forward(self, x):
            return SimpleNamespace(logits=self.net(x))

    torch.manual_seed(0)
    model = Toy().train()
    objective = get_objective({"name": "dann", "source_warmup": 0.5})
    before = model.net[1].running_mean.clone()
    out = objective.warmup_loss(model, {"x": torch.randn(1, 4)}, torch.tensor([2]))
    assert torch.isfinite(out.loss) and model.net[1].training  # back in training mode afterwards
    torch.testing.assert_close(model.net[1].running_mean, before)  # running statistics read, not updated
    objective.warmup_loss(model, {"x": torch.randn(5, 4)}, torch.tensor([0, 1, 2, 0, 1]))
    assert not torch.equal(model.net[1].running_mean, before)  # a normal batch normalises with its own statistics
