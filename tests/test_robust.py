"""Robust transfer: WiSE-FT interpolation and model soups of saved models (``hftransfer.robust``), and the
self-training objective's adaptive thresholds and quality gate."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import hftransfer
from hftransfer import AutoTransfer
from hftransfer.cli import main as cli_main
from hftransfer.errors import ConfigurationError, OutputDirError
from hftransfer.modeling import TransferOutput
from hftransfer.objectives import StepInfo, get_objective
from hftransfer.objectives.self_training import flexmatch_thresholds


LABELS = {i: str(i) for i in range(10)}


def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return np.rint(data.images * (255.0 / 16.0)).astype(np.uint8), data.target


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> dict[str, Path]:
    """A tiny ResNet whose head is a nearest-class-mean classifier of digits (well above chance, no training), the
    same model with its head zeroed (the "start"), a copy, a deliberately broken one, and labelled validation data."""
    from PIL import Image

    root = tmp_path_factory.mktemp("robust")
    torch.manual_seed(0)
    model = AutoTransfer.from_pretrained("timm:test_resnet", pretrained=False, id2label=LABELS).eval()
    model.backbone.preprocessor = model.preprocessor.with_image_size(32)
    x, y = digits()
    with torch.no_grad():
        features = model.forward_features(**model.preprocess([Image.fromarray(a) for a in x[:300]]))
        means = torch.stack([features[torch.from_numpy(y[:300] == c)].mean(0) for c in range(10)])
        model.head.fc.weight.copy_(means)
        model.head.fc.bias.copy_(-0.5 * (means ** 2).sum(1))
    paths = {"good": model.save_pretrained(root / "good"), "copy": model.save_pretrained(root / "copy")}
    weight = model.head.fc.weight.detach().clone()
    with torch.no_grad():
        model.head.fc.weight.mul_(-3.0)  # averaged with two good heads, the soup's head points the wrong way
        paths["broken"] = model.save_pretrained(root / "broken")
        model.head.fc.weight.zero_()
        model.head.fc.bias.zero_()
        paths["start"] = model.save_pretrained(root / "start")
        model.head.fc.weight.copy_(weight)
    np.savez(root / "val.npz", x=x[1000:1100], y=y[1000:1100])
    paths["val"] = root / "val.npz"
    return paths


def perturbed_pair(root: Path, name: str = "timm:test_resnet", **kwargs) -> tuple[Path, Path]:
    torch.manual_seed(1)
    model = AutoTransfer.from_pretrained(name, pretrained=False, **kwargs)
    a = model.save_pretrained(root / "a")
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param))
    return a, model.save_pretrained(root / "b")


def weights(folder: Path) -> dict[str, torch.Tensor]:
    file = folder / "model.safetensors"
    return load_file(file if file.is_file() else folder / "adapter_model.safetensors")


def assert_same(x: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> None:
    assert x.keys() == y.keys()
    for key in x:
        assert x[key].dtype == y[key].dtype and torch.equal(x[key], y[key]), key


# --- WiSE-FT interpolation ------------------------------------------------------------------------------------------


def test_interpolation_ends_are_the_two_models_bit_for_bit_and_the_middle_is_their_mean(tmp_path):
    a, b = perturbed_pair(tmp_path, num_labels=3)
    wa, wb = weights(a), weights(b)
    for alpha, expected in ((0.0, wa), (1.0, wb)):
        result = hftransfer.interpolate(a, b, alphas=alpha, output_dir=tmp_path / f"out{alpha}")
        assert result.alpha == alpha and result.curve == []
        assert_same(weights(result.output_dir), expected)
    middle = weights(hftransfer.interpolate(a, b, alphas=0.5, output_dir=tmp_path / "mid").output_dir)
    for key, value in middle.items():
        if value.is_floating_point():
            assert torch.equal(value, (wa[key] + wb[key]) / 2), key
        else:  # BatchNorm's num_batches_tracked cannot be mixed
            assert torch.equal(value, wa[key]), key
    loaded = AutoTransfer.from_pretrained(tmp_path / "mid")
    assert_same(dict(loaded.state_dict()), middle)
    record = json.loads((tmp_path / "mid" / "wise_ft.json").read_text())
    assert record["alpha"] == 0.5 and record["model_a"] == str(a) and record["selection"] is None


def test_interpolation_refuses_models_that_differ_and_says_what_differs(tmp_path):
    a, _ = perturbed_pair(tmp_path / "three", num_labels=3)
    four, _ = perturbed_pair(tmp_path / "four", num_labels=4)
    with pytest.raises(ConfigurationError, match=r"model_b=.*four.*label map differs.*parameter shapes differ"):
        hftransfer.interpolate(a, four, output_dir=tmp_path / "out")
    vit, _ = perturbed_pair(tmp_path / "vit", "timm:test_vit", num_labels=3)
    with pytest.raises(ConfigurationError, match=r"base model differs .*test_resnet.* vs .*test_vit.*parameter names"):
        hftransfer.interpolate(a, vit, output_dir=tmp_path / "out")
    with pytest.raises(ConfigurationError, match=r"alphas=\[0.0, 1.0\] are several but data=None"):
        hftransfer.interpolate(a, a, alphas=[0, 1], output_dir=tmp_path / "out")
    with pytest.raises(ConfigurationError, match=r"alphas=1.5 must be .* in \[0, 1\]"):
        hftransfer.interpolate(a, a, alphas=1.5, output_dir=tmp_path / "out")
    with pytest.raises(OutputDirError, match="is an input model's folder"):
        hftransfer.interpolate(a, a, output_dir=a)
    assert not (tmp_path / "out").exists()


def test_lora_folders_interpolate_their_adapter_weights(tmp_path):
    torch.manual_seed(0)
    model = AutoTransfer.from_pretrained("timm:test_vit", pretrained=False, num_labels=3, method="lora")
    a = model.save_pretrained(tmp_path / "a", full_weights=False)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param))
    b = model.save_pretrained(tmp_path / "b", full_weights=False)
    wa, wb = weights(a), weights(b)
    assert any("lora_" in k for k in wa) and len(wa) < len(model.state_dict())
    out = hftransfer.interpolate(a, b, alphas=0.25, output_dir=tmp_path / "out").output_dir
    assert not (out / "model.safetensors").exists()
    mixed = load_file(out / "adapter_model.safetensors")
    assert mixed.keys() == wa.keys()
    for key in mixed:
        torch.testing.assert_close(mixed[key], 0.75 * wa[key] + 0.25 * wb[key], rtol=1e-6, atol=1e-6)
    assert json.loads((out / "hftransfer_config.json").read_text())["method"]["name"] == "lora"
    # Full-weight LoRA folders (what a base that cannot be fetched again gets) load and keep the adapters.
    fa = model.save_pretrained(tmp_path / "fa", full_weights=True)
    full = hftransfer.interpolate(fa, fa, alphas=0.5, output_dir=tmp_path / "fout").output_dir
    loaded = AutoTransfer.from_pretrained(full)
    assert loaded.method.name == "lora"
    assert_same(dict(loaded.state_dict()), weights(fa))


def test_a_linear_probe_mixes_with_its_fine_tuned_model_as_full_weights(tmp_path):
    # WiSE-FT from the LP start: the folders are of different methods, so both are loaded and full weights mixed.
    torch.manual_seed(2)
    model = AutoTransfer.from_pretrained("timm:test_resnet", pretrained=False, num_labels=3)
    tuned = model.save_pretrained(tmp_path / "tuned")
    model.apply_method("linear_probe")
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.5)
    probe = model.save_pretrained(tmp_path / "probe")
    assert json.loads((probe / "hftransfer_config.json").read_text())["method"]["name"] == "linear_probe"
    start = hftransfer.interpolate(probe, tuned, alphas=0.0, output_dir=tmp_path / "start").output_dir
    assert_same(weights(start), weights(probe))
    config = json.loads((start / "hftransfer_config.json").read_text())
    assert config["method"]["name"] == "full" and config["weights"] == "full"
    middle = weights(hftransfer.interpolate(probe, tuned, alphas=0.5, output_dir=tmp_path / "mid").output_dir)
    wp, wt = weights(probe), weights(tuned)
    assert all(torch.equal(v, (wp[k] + wt[k]) / 2) for k, v in middle.items() if v.is_floating_point())


def test_alphas_are_scored_on_the_named_data_and_the_best_is_saved_with_its_curve(fitted, tmp_path):
    result = hftransfer.interpolate(fitted["start"], fitted["good"], alphas="0,0.5,1", data=fitted["val"],
                                    output_dir=tmp_path / "wise")
    accuracy = {row["alpha"]: row["accuracy"] for row in result.curve}
    # alpha 0 is the zeroed head (one class for every row); alpha 0.5 halves the good head: same predictions as 1.
    assert accuracy[0.0] < 0.2 < accuracy[1.0] and accuracy[0.5] == accuracy[1.0]
    assert result.alpha == 0.5  # a tie goes to the alpha nearest 0.5
    record = json.loads((tmp_path / "wise" / "wise_ft.json").read_text())
    assert record["selection"]["split"] == "val" and record["selection"]["num_samples"] == 100
    assert [row["alpha"] for row in record["curve"]] == [0.0, 0.5, 1.0]
    assert (tmp_path / "wise" / "wise_ft.png").stat().st_size > 1000
    scored = hftransfer.evaluate(tmp_path / "wise", fitted["val"], progress_bar=False)
    assert scored.metrics["accuracy"] == accuracy[0.5]


# --- soups ----------------------------------------------------------------------------------------------------------


def test_a_soup_of_identical_models_is_the_model(fitted, tmp_path):
    result = hftransfer.soup([fitted["good"], fitted["copy"], fitted["good"]], output_dir=tmp_path / "soup")
    assert result.method == "uniform" and len(result.used) == 3 and result.accuracy is None
    assert_same(weights(result.output_dir), weights(fitted["good"]))
    assert json.loads((tmp_path / "soup" / "soup.json").read_text())["ingredients"][1]["model"] == str(fitted["copy"])


def test_greedy_soup_skips_an_ingredient_that_hurts(fitted, tmp_path):
    result = hftransfer.soup([fitted["broken"], fitted["good"], fitted["copy"]], method="greedy", data=fitted["val"],
                             output_dir=tmp_path / "greedy")
    by_name = {Path(row["model"]).name: row for row in result.ingredients}
    assert by_name["broken"]["accuracy"] < by_name["good"]["accuracy"] == by_name["copy"]["accuracy"]
    assert by_name["good"]["in_soup"] and by_name["copy"]["in_soup"] and not by_name["broken"]["in_soup"]
    assert result.accuracy == by_name["good"]["accuracy"] == by_name["copy"]["soup_accuracy_with_it"]
    assert by_name["broken"]["soup_accuracy_with_it"] < result.accuracy
    assert_same(weights(result.output_dir), weights(fitted["good"]))
    record = json.loads((tmp_path / "greedy" / "soup.json").read_text())
    assert record["method"] == "greedy" and record["selection"]["split"] == "val"
    with pytest.raises(ConfigurationError, match="method='greedy' ranks .* pass data="):
        hftransfer.soup([fitted["good"], fitted["copy"]], method="greedy", output_dir=tmp_path / "g2")
    with pytest.raises(ConfigurationError, match=r"models\[1\]=.* label map differs"):
        hftransfer.soup([fitted["good"], perturbed_pair(tmp_path, num_labels=3)[0]], output_dir=tmp_path / "g3")


def test_cli_interpolate_and_soup(fitted, tmp_path, capsys):
    assert cli_main(["interpolate", str(fitted["start"]), str(fitted["good"]), "--alpha", "1",
                     str(tmp_path / "one")]) == 0
    assert_same(weights(tmp_path / "one"), weights(fitted["good"]))
    assert cli_main(["soup", str(fitted["good"]), str(fitted["copy"]), "--output", str(tmp_path / "s")]) == 0
    assert "uniform soup of 2 models saved" in capsys.readouterr().out
    assert cli_main(["soup", str(fitted["good"]), str(fitted["copy"]), "--output", str(tmp_path / "s")]) == 2
    assert "exists and is not empty" in capsys.readouterr().err


# --- self-training: adaptive thresholds and the quality gate --------------------------------------------------------


class FixedLogits(nn.Module):
    """A "model" whose logits are its input times a scale: the tests choose the teacher's predictions directly."""

    num_labels = 3

    def __init__(self, scale: float):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(scale))

    def forward(self, pixel_values: torch.Tensor) -> TransferOutput:
        return TransferOutput(logits=pixel_values * self.scale)


def gate_step(scale: float, weak: torch.Tensor, strong: torch.Tensor, **options):
    objective = get_objective({"name": "self_training", **options})
    model = FixedLogits(scale)
    objective.prepare_model(model)
    objective.bind({}, model, torch.device("cpu"))
    source, targets = torch.eye(3).repeat(2, 1), torch.tensor([0, 1, 2] * 2)
    out = objective.compute_loss(model, {"pixel_values": source}, targets,
                                 {"pixel_values": weak, "pixel_values_strong": strong}, StepInfo(3, 10))
    return objective, out, objective.classification_loss(model(source).logits, targets)


def test_gate_holds_back_a_teacher_whose_weak_and_strong_views_disagree(caplog):
    weak = torch.eye(3).repeat(4, 1)
    with caplog.at_level(logging.INFO, logger="hftransfer"):
        objective, out, cls = gate_step(20.0, weak, weak.roll(1, dims=1))  # confident, and never the same class
    assert out.logs["pseudo_weight"] == 0.0 and out.logs["gate_open"] == 0.0 and out.logs["mask_rate"] == 1.0
    assert out.logs["teacher_agreement"] == 0.0 and out.logs["pseudo_loss"] > 1.0
    assert torch.equal(out.loss, cls)  # only the source loss counts
    assert "holding back pseudo-labels from step 3: teacher weak/strong agreement 0.000 < gate_min_agreement" \
        in caplog.text
    stats = objective.to_dict()["gate_stats"]
    assert stats["gated_batches"] == 1 and stats["gated_fraction"] == 1.0 and stats["open_at_end"] is False


def test_gate_holds_back_an_unsure_teacher_and_lets_a_good_one_through(caplog):
    weak = torch.eye(3).repeat(4, 1)
    with caplog.at_level(logging.INFO, logger="hftransfer"):
        _, unsure, cls = gate_step(0.1, weak, weak, threshold=0.0)  # near-uniform predictions
    assert unsure.logs["pseudo_weight"] == 0.0 and unsure.logs["teacher_entropy"] > 0.99
    assert torch.equal(unsure.loss, cls) and "normalised target entropy 0.99" in caplog.text
    objective, good, cls = gate_step(5.0, weak, weak, weight=0.5)  # top probability 0.987
    assert good.logs["gate_open"] == 1.0 and good.logs["pseudo_weight"] == 0.5 and good.logs["mask_rate"] == 1.0
    assert good.logs["teacher_agreement"] == 1.0 and good.logs["teacher_entropy"] < 0.1
    torch.testing.assert_close(good.loss, cls + 0.5 * good.logs["pseudo_loss"])
    assert good.logs["pseudo_loss"] > 0 and objective.to_dict()["gate_stats"]["gated_fraction"] == 0.0
    # The gate's and the thresholds' state survive a checkpoint.
    state = objective.state_dict()
    restored, _, _ = gate_step(20.0, weak, weak.roll(1, dims=1))
    restored.load_state_dict(state)
    assert restored.gate_stats() == objective.gate_stats() and torch.equal(restored.status, objective.status)


def test_one_view_reports_no_agreement_it_never_measured():
    # Text has no strong view: the gate tests the entropy only, and the stats carry no made-up agreement of 0.
    objective = get_objective({"name": "self_training", "strong_augment": None})
    model = FixedLogits(5.0)
    objective.prepare_model(model)
    objective.bind({}, model, torch.device("cpu"))
    source, targets = torch.eye(3).repeat(2, 1), torch.tensor([0, 1, 2] * 2)
    out = objective.compute_loss(model, {"pixel_values": source}, targets,
                                 {"pixel_values": torch.eye(3).repeat(4, 1)}, StepInfo(3, 10))
    assert out.logs["gate_open"] == 1.0 and "teacher_agreement" not in out.logs
    stats = objective.gate_stats()
    assert "teacher_agreement" not in stats and stats["teacher_entropy"] < 0.1 and stats["gated_fraction"] == 0.0
    assert "teacher_agreement" in gate_step(5.0, torch.eye(3), torch.eye(3))[0].gate_stats()  # two views: measured


def test_flexmatch_thresholds_lower_the_bar_for_classes_the_teacher_rarely_picks():
    status = torch.tensor([0.4, 0.2, 0.0])
    thresholds = flexmatch_thresholds(status, torch.tensor([0.1]), threshold=0.9, min_threshold=0.3)
    expected = [0.9, 0.9 * 0.5 / 1.5, 0.3]  # beta 1, 0.5, 0 -> M(beta) = beta / (2 - beta), floored
    torch.testing.assert_close(thresholds, torch.tensor(expected))
    # While most samples are unconfident, every class's status is measured against that share (warm-up).
    warm = flexmatch_thresholds(status, torch.tensor([0.8]), threshold=0.9, min_threshold=0.0)
    torch.testing.assert_close(warm, torch.tensor([0.9 * 0.5 / 1.5, 0.9 * 0.25 / 1.75, 0.0]))
    assert torch.equal(flexmatch_thresholds(torch.full((3,), 1 / 3), torch.zeros(1), 0.95, 0.7),
                       torch.full((3,), 0.95))
    with pytest.raises(ValueError, match=r"objective.gate_min_agreement=1.5 must be a share in \[0, 1\]"):
        get_objective({"name": "self_training", "gate_min_agreement": 1.5})


@pytest.mark.integration
def test_training_records_the_gated_fraction_and_logs_why(tmp_path):
    from helpers import tiny_config

    x, _ = digits()
    np.savez(tmp_path / "target.npz", x=255 - x[:32])
    config = tiny_config(tmp_path, epochs=1, **{"data.max_train_samples": 32, "target.source":
                                                str(tmp_path / "target.npz"), "objective.name": "self_training"})
    result = hftransfer.train(config)
    metrics = json.loads((result.output_dir / "metrics.json").read_text())
    stats = metrics["objective"]["gate_stats"]
    # A random-init model is an unsure teacher: every batch is held back, and the log says why.
    assert stats["batches"] == 2 and stats["gated_fraction"] == 1.0 and math.isfinite(stats["teacher_entropy"])
    log = (result.output_dir / "train.log").read_text()
    assert "self_training: holding back pseudo-labels from step 0" in log and "gate_max_entropy 0.5" in log
