"""WiSE-FT as a training option (``wise_ft: {alphas: [...]}``): the run's start and its best model, interpolated,
the alpha chosen on validation (``hftransfer.training.wise_ft``)."""

from __future__ import annotations

import json

import pytest
import torch

import hftransfer
from hftransfer.errors import ConfigurationError
from hftransfer.modeling import AutoTransfer
from hftransfer.training.accelerator import build_accelerator
from hftransfer.training.callbacks import Callback
from hftransfer.training.config import TrainConfig
from hftransfer.training.wise_ft import DEFAULT_ALPHAS, START_FILE, WiseFT, WiseFTConfig

from helpers import (
    assert_same_weights,
    launch_single_and_two_process,
    run_killed_and_resumed,
    saved_weights,
    tiny_config,
)


class StartWeights(Callback):
    """The model's weights when training begins (after set-up and lp_ft's probe: WiSE-FT's start)."""

    def on_train_begin(self, trainer) -> None:
        model = trainer.accelerator.unwrap_model(trainer.model)
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}


def run(tmp_path, name: str, recipe: str = "full", alphas: list[float] | None = None, **overrides):
    """A tiny run (same seed every time, so every run of a recipe fine-tunes to the same weights)."""
    config = tiny_config(tmp_path / name, recipe=recipe, **overrides)
    if alphas is not None:
        config["wise_ft"] = {"alphas": alphas}
    start = StartWeights()
    result = hftransfer.train(config, callbacks=[start])
    return result, start.state, json.loads((result.output_dir / "metrics.json").read_text())


def saved_state(model_dir) -> dict[str, torch.Tensor]:
    model = AutoTransfer.from_pretrained(model_dir)
    return {k: v for k, v in model.state_dict().items() if v.is_floating_point()}


@pytest.mark.parametrize("recipe", ["full", "lp_ft", "lora"])
def test_alpha_zero_saves_the_start_and_alpha_one_the_fine_tuned_model_bit_for_bit(tmp_path, recipe):
    plain, start, _ = run(tmp_path, "plain", recipe)
    one, _, one_metrics = run(tmp_path, "one", recipe, alphas=[1.0])
    zero, _, zero_metrics = run(tmp_path, "zero", recipe, alphas=[0.0])
    fine_tuned, at_one, at_zero = (saved_state(r.model_dir) for r in (plain, one, zero))
    changed = [k for k in start if not torch.equal(start[k], fine_tuned[k])]
    assert changed  # training moved something, so the two ends differ
    for key in fine_tuned:
        assert torch.equal(at_one[key], fine_tuned[key]), key
        assert torch.equal(at_zero[key], start[key]), key
    assert one_metrics["wise_ft"]["alpha"] == 1.0 and zero_metrics["wise_ft"]["alpha"] == 0.0
    assert zero_metrics["wise_ft"]["tensors_interpolated"] == len(changed)
    # the reported validation numbers are those of the saved model
    assert one_metrics["final_eval"]["accuracy"] == plain.final_metrics["accuracy"]
    assert zero_metrics["final_eval"]["accuracy"] == zero_metrics["wise_ft"]["curve"][0]["accuracy"]


def test_alphas_are_scored_on_validation_and_the_best_mix_is_saved_with_its_curve(tmp_path):
    plain, start, _ = run(tmp_path, "plain", "lp_ft")
    result, _, metrics = run(tmp_path, "wise", "lp_ft", alphas=[0.0, 0.5, 1.0])
    record = metrics["wise_ft"]
    assert [row["alpha"] for row in record["curve"]] == [0.0, 0.5, 1.0]
    best = max(row["accuracy"] for row in record["curve"])
    chosen = next(row for row in record["curve"] if row["alpha"] == record["alpha"])
    assert chosen["accuracy"] == best
    assert metrics["final_eval"]["accuracy"] == chosen["accuracy"]
    assert record["selection"] == {"split": "validation", "metric": "accuracy"}
    # the saved model is exactly the chosen mix of the start and the fine-tuned model
    fine_tuned, saved = saved_state(plain.model_dir), saved_state(result.model_dir)
    alpha = record["alpha"]
    for key, value in saved.items():
        mixed = (1 - alpha) * start[key].double() + alpha * fine_tuned[key].double()
        if torch.equal(start[key], fine_tuned[key]):
            mixed = fine_tuned[key].double()
        assert torch.equal(value, mixed.to(value.dtype)), key
    assert json.loads((result.model_dir / "wise_ft.json").read_text())["alpha"] == alpha
    assert (result.model_dir / "wise_ft.png").is_file()
    assert f"alpha {alpha:g} saved" in (result.model_dir / "README.md").read_text()
    assert not (result.output_dir / START_FILE).exists()  # the start is only kept while the run lasts


def test_the_mid_point_is_the_mean_of_start_and_fine_tuned_weights(tmp_path):
    plain, start, _ = run(tmp_path, "plain", "full")
    half, _, _ = run(tmp_path, "half", "full", alphas=[0.5])
    fine_tuned, saved = saved_state(plain.model_dir), saved_state(half.model_dir)
    moved = [k for k in start if not torch.equal(start[k], fine_tuned[k])]
    for key in moved:
        torch.testing.assert_close(saved[key], (start[key] + fine_tuned[key]) / 2)
        assert not torch.equal(saved[key], fine_tuned[key])


@pytest.mark.parametrize(("alphas", "said"), [([1.5], "[0, 1]"), ([], "one or more"), ("a,b", "comma-separated")])
def test_invalid_alphas_are_refused_before_any_work_naming_the_option(tmp_path, alphas, said):
    with pytest.raises(ConfigurationError, match="wise_ft.alphas") as err:
        TrainConfig.from_dict(tiny_config(tmp_path, wise_ft={"alphas": alphas}))
    assert said in str(err.value)


def test_an_empty_section_takes_the_default_alphas_and_none_is_off(tmp_path):
    assert TrainConfig.from_dict(tiny_config(tmp_path, wise_ft={})).wise_ft.alphas == list(DEFAULT_ALPHAS)
    assert TrainConfig.from_dict(tiny_config(tmp_path)).wise_ft is None
    assert TrainConfig.from_dict(tiny_config(tmp_path, wise_ft={"alphas": "1,0,0.5"})).wise_ft.alphas == [0, 0.5, 1]


def test_a_resumed_run_interpolates_from_the_saved_start_not_from_where_it_resumed(tmp_path):
    wise = WiseFT(WiseFTConfig(alphas=[0.0]), tmp_path, build_accelerator("no"), lambda _: None)
    with pytest.raises(ConfigurationError, match="overwrite_output_dir=true"):
        wise.remember_start(torch.nn.Linear(3, 2), resumed=True)  # no start file: says how to go on
    torch.manual_seed(0)
    first = torch.nn.Linear(3, 2)
    wise.remember_start(first, resumed=False)
    assert (tmp_path / START_FILE).is_file()
    later = torch.nn.Linear(3, 2)  # other weights: the model as a checkpoint restores it
    resumed = WiseFT(WiseFTConfig(alphas=[0.0]), tmp_path, build_accelerator("no"), lambda _: None)
    resumed.remember_start(later, resumed=True)
    record = resumed.apply(later, lambda: {"accuracy": 0.5}, "accuracy", True)
    assert record["alpha"] == 0.0
    assert torch.equal(later.weight, first.weight) and torch.equal(later.bias, first.bias)


@pytest.mark.integration
def test_a_run_killed_and_resumed_saves_the_same_interpolation_as_an_uninterrupted_one(tmp_path):
    # SIGKILL mid-run: the resumed process reads the start from output_dir, so the mix (and its curve) are the same.
    common = {"recipe": "lp_ft", "epochs": 3, "checkpoint_every_steps": 2, "wise_ft": {"alphas": [0.0, 0.5, 1.0]}}
    clean, killed = (tiny_config(tmp_path / name, **common) for name in ("clean", "killed"))

    def inspect(last) -> None:
        assert (last.parent.parent / START_FILE).is_file()

    run_killed_and_resumed(tmp_path, clean, killed, kill_step=7, last_checkpoint=6, after_kill=inspect)
    assert_same_weights(saved_weights(clean["output_dir"]), saved_weights(killed["output_dir"]))
    records = [json.loads((tmp_path / name / "run" / "metrics.json").read_text())["wise_ft"]
               for name in ("clean", "killed")]
    assert records[0] == records[1] and len(records[0]["curve"]) == 3


@pytest.mark.integration
def test_two_processes_choose_and_save_like_one_and_only_rank0_writes(tmp_path):
    base = {"recipe": "lp_ft", "epochs": 2, "optim.name": "sgd", "optim.lr": 0.05, "wise_ft": {"alphas": [0, 0.5, 1]}}
    m1, m2, w1, w2 = launch_single_and_two_process(tmp_path, tiny_config(tmp_path / "single", **base),
                                                   tiny_config(tmp_path / "double", **base))
    assert [r["alpha"] for r in m2["wise_ft"]["curve"]] == [0, 0.5, 1]
    for r1, r2 in zip(m1["wise_ft"]["curve"], m2["wise_ft"]["curve"]):
        assert r1["accuracy"] == pytest.approx(r2["accuracy"], abs=1 / 40 + 1e-9)
    for key in w1:
        torch.testing.assert_close(w1[key], w2[key], rtol=1e-3, atol=1e-4)
    assert not (tmp_path / "double" / "run" / START_FILE).exists()
