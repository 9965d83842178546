"""The workflow around training: test split, evaluate, batch predict, data report, class imbalance, trackers."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import hftransfer
from hftransfer.data import DataConfig, DataError, load_data
from hftransfer.data.labelled_split import load_labelled_split
from hftransfer.data.report import build_data_report, format_data_report_markdown
from hftransfer.errors import ConfigurationError
from hftransfer.inference import evaluate, predict_file
from hftransfer.inference.precision import resolve_precision
from hftransfer.training import Callback, TrainConfig
from hftransfer.training.loaders import EpochBatchSampler, balanced_sample_weights, inverse_frequency_weights
from hftransfer.training.trackers import check_trackers

from helpers import assert_same_weights, run_killed_and_resumed, saved_weights, tiny_config


# ------------------------------------------------------------------------------------------------------- fixtures


def digit_folders(root: Path, rare_every: int = 4) -> Path:
    """train/val/test class folders of 16x16 digit images, 3 classes; class c2 is rare in train."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for split, rows in (("train", range(120)), ("val", range(120, 160)), ("test", range(160, 200))):
        for i in rows:
            label = int(digits.target[i]) % 3
            if split == "train" and label == 2 and i % rare_every:
                continue
            path = root / split / f"c{label}" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            pixels = np.rint(digits.images[i] * 255 / 16).astype(np.uint8)
            Image.fromarray(pixels).resize((16, 16)).save(path)
    return root


def image_config(tmp_path: Path, data: dict, **overrides) -> dict:
    config = tiny_config(tmp_path, data=data)
    config.update(overrides)
    return config


def reviews_csv(path: Path, n: int = 40, duplicate: str | None = None) -> Path:
    pos, neg = ["good", "great", "fun"], ["bad", "awful", "dull"]
    rows = [("text", "label")]
    for i in range(n):
        label = "positive" if i % 2 == 0 else "negative"
        word = (pos if label == "positive" else neg)[i % 3]
        rows.append((f"the movie {i} was very {word}", label))
    if duplicate:
        rows.append((duplicate, "positive"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


@pytest.fixture(scope="module")
def trained_image(tmp_path_factory):
    """A tiny image model trained with a held-out test split (and the folders it used)."""
    tmp = tmp_path_factory.mktemp("image_run")
    root = digit_folders(tmp / "digits")
    config = image_config(tmp, {"source": str(root), "test": str(root / "test")}, report_to=["tensorboard"])
    result = hftransfer.train(config)
    return result, root


@pytest.fixture(scope="module")
def trained_text(tmp_path_factory, tiny_models):
    tmp = tmp_path_factory.mktemp("text_run")
    train = reviews_csv(tmp / "data" / "train.csv", 48)
    config = image_config(tmp, {"source": str(train), "validation_split": 0.25}, recipe="full",
                          model={"name": tiny_models["transformers_bert"], "pretrained": False, "max_length": 8})
    return hftransfer.train(config)


# ------------------------------------------------------------------------------------------- test split in training


def test_test_split_is_scored_once_and_kept_apart_from_selection(trained_image):
    # metrics.json and the card carry validation (marked as the selection split) and test as separate results.
    result, root = trained_image
    metrics = json.loads((result.output_dir / "metrics.json").read_text())
    assert metrics["selection_split"] == "validation"
    test = metrics["test_eval"]
    assert result.test_metrics["accuracy"] == test["accuracy"]
    assert test["per_class"]["num_samples"] == 40 and sum(map(sum, test["confusion_matrix"])) == 40
    assert metrics["final_eval"]["per_class"]["num_samples"] == 40  # the val/ folder, not the test one
    card = (result.model_dir / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    by_split = {}
    for entry in meta["model-index"][0]["results"]:
        by_split[entry["dataset"]["split"]] = {m["type"]: m["value"] for m in entry["metrics"]}
    assert set(by_split) == {"validation", "test"}
    assert by_split["test"]["accuracy"] == pytest.approx(test["accuracy"])
    assert by_split["validation"]["accuracy"] == pytest.approx(metrics["final_eval"]["accuracy"])
    assert "| Metric | validation (model selection) | test |" in card
    assert "`validation` split picked the best checkpoint" in card and "## Per-class report (`test` split)" in card
    # The test numbers are the best checkpoint's: evaluate() on the saved model reproduces them.
    again = evaluate(result.model_dir, root / "test", progress_bar=False)
    assert again.metrics["accuracy"] == pytest.approx(test["accuracy"])
    assert again.metrics["loss"] == pytest.approx(test["loss"], rel=1e-4)


def test_card_without_test_split_says_validation_selected_the_model(tmp_path):
    config = image_config(tmp_path, {"source": "sklearn_digits", "max_train_samples": 40, "max_eval_samples": 20},
                          epochs=1)
    result = hftransfer.train(config)
    card = (result.model_dir / "README.md").read_text()
    assert "No held-out test split was scored" in card
    assert "test_eval" not in json.loads((result.output_dir / "metrics.json").read_text())


def test_test_split_labels_map_by_name_and_unknown_labels_fail(tmp_path):
    train = reviews_csv(tmp_path / "train.csv")
    test = tmp_path / "test.csv"
    test.write_text("text,label\nthe movie was good,positive\nthe film was bad,negative\n")
    data = load_data(DataConfig(source=str(train), test=str(test)))
    assert data.label_names == ["negative", "positive"]
    assert data.test["label"] == [1, 0] and data.report.num_rows["test"] == 2
    test.write_text("text,label\nthe movie was ok,neutral\n")
    with pytest.raises(DataError, match=r"data\.test=.*\['neutral'\].*not among the model's 2 labels"):
        load_data(DataConfig(source=str(train), test=str(test)))


def test_test_folder_with_fewer_classes_maps_by_name(tmp_path):
    root = digit_folders(tmp_path / "d")
    only = tmp_path / "only_c2"
    (only / "c2").mkdir(parents=True)
    for f in sorted((root / "test" / "c2").iterdir())[:3]:
        (only / "c2" / f.name).write_bytes(f.read_bytes())
    split = load_labelled_split(DataConfig(source=str(only)), ["c0", "c1", "c2"], key="data.test")
    assert split.dataset["label"] == [2, 2, 2]
    with pytest.raises(DataError, match="several splits"):
        load_labelled_split(DataConfig(source=str(root)), ["c0", "c1", "c2"])


def test_hub_test_split_is_never_picked_as_validation(tmp_path):
    # A local folder read with the hub loader (datasets.load_dataset): splits train + test.
    folder = tmp_path / "hubds"
    reviews_csv(folder / "train.csv", 20)
    (folder / "test.csv").write_text("text,label\ngood fun,positive\nbad dull,negative\nawful,negative\n")
    data = load_data(DataConfig(source=str(folder), format="hub", test="test", validation_split=0.25))
    assert len(data.test) == 3 and len(data.train) + len(data.validation) == 20
    assert "stratified" in data.description.validation_source
    with pytest.raises(DataError, match=r"data\.test='heldout' is not a split .*\['train', 'test'\]"):
        load_data(DataConfig(source=str(folder), format="hub", test="heldout"))


# -------------------------------------------------------------------------------------------------- data report


def test_data_report_counts_duplicates_imbalance_and_lengths(tmp_path):
    train = reviews_csv(tmp_path / "train.csv", 40, duplicate="the movie 0 was very good")
    val = tmp_path / "validation.csv"
    val.write_text("text,label\nthe movie 2 was very fun,positive\na brand new review,negative\n,negative\n")
    test = tmp_path / "test.csv"
    test.write_text("text,label\na brand new review,negative\nthe movie 4 was very great,positive\n")
    config = DataConfig(source=str(train), validation=str(val), test=str(test))
    with pytest.warns(UserWarning, match="skipped 1"):
        data = load_data(config)
    report = build_data_report(data, config, max_length=6, count_tokens=lambda texts: [len(t.split()) for t in texts])
    assert report["format"] == "csv" and report["columns"] == {"label": "label", "text": "text"}
    assert report["duplicates"]["within"] == {"train": 1, "validation": 0, "test": 0}
    assert report["duplicates"]["across"] == {"validation_in_train": 1, "test_in_train": 1, "test_in_validation": 1}
    assert report["skipped"]["total"] == 1 and report["skipped"]["by_reason"] == {"empty text": 1}
    assert report["imbalance_ratio"] == pytest.approx(21 / 20)
    # "the movie N was very word" is 6 words: not longer than 6; the validation row "a brand new review" neither.
    assert report["text_length"]["train"]["longer_than_max_length"] == 0.0
    report_7 = build_data_report(data, config, max_length=5, count_tokens=lambda t: [len(x.split()) for x in t])
    assert report_7["text_length"]["validation"]["longer_than_max_length"] == pytest.approx(0.5)
    markdown = format_data_report_markdown(report)
    assert "test in train 1" in markdown and "class_weights" not in markdown
    assert any("also occur in train" in tip for tip in report["suggestions"])


def test_data_report_finds_images_with_the_same_bytes_under_other_names(tmp_path):
    # Image duplicates are found by file content: a copy under another name (and another split) counts.
    root = digit_folders(tmp_path / "digits")
    first = sorted((root / "train" / "c0").iterdir())[0]
    (root / "train" / "c0" / "copy.png").write_bytes(first.read_bytes())
    (root / "test" / "c0" / "leak.png").write_bytes(first.read_bytes())
    (root / "test" / "c0" / "other.png").write_bytes(sorted((root / "train" / "c1").iterdir())[0].read_bytes())
    config = DataConfig(train=str(root / "train"), validation=str(root / "val"), test=str(root / "test"))
    report = build_data_report(load_data(config), config)
    assert report["duplicates"]["within"] == {"train": 1, "validation": 0, "test": 0}
    assert report["duplicates"]["across"] == {"validation_in_train": 0, "test_in_train": 2, "test_in_validation": 0}


def test_training_writes_the_data_report_and_suggests_imbalance_fixes(trained_image):
    result, _ = trained_image
    report = json.loads((result.output_dir / "data_report.json").read_text())
    counts = report["class_counts"]["train"]
    assert report["imbalance_ratio"] == pytest.approx(max(counts.values()) / min(counts.values()))
    assert report["imbalance_ratio"] >= 3 and any("class_weights: auto" in s for s in report["suggestions"])
    assert report["image_size"]["width"]["max"] == 16 and report["num_rows"]["test"] == 40
    assert (result.output_dir / "data_report.md").read_text().startswith("# Data report")
    assert "## Data report" in (result.model_dir / "README.md").read_text()
    log = (result.output_dir / "train.log").read_text()
    assert "data report: imagefolder (image)" in log and "suggestion: classes are imbalanced" in log


@pytest.mark.integration
def test_data_report_on_real_data(shared_data):
    config = DataConfig(source=str(shared_data / "hymenoptera"))
    report = build_data_report(load_data(config), config)
    assert report["num_rows"] == {"train": 245, "validation": 153}
    assert report["imbalance_ratio"] < 1.1 and report["image_size"]["distinct_sizes"] > 10
    sst2 = DataConfig(source=str(shared_data / "sst2"), max_train_samples=500)
    text = build_data_report(load_data(sst2), sst2, max_length=16, count_tokens=lambda t: [len(x.split()) for x in t])
    assert 0 < text["text_length"]["validation"]["longer_than_max_length"] < 1


# ---------------------------------------------------------------------------------------------- class imbalance


def test_imbalance_options_are_validated_early():
    with pytest.raises(ValueError, match="class_weights='inverse' is invalid"):
        TrainConfig(class_weights="inverse")
    with pytest.raises(ValueError, match="sampler='oversample' is invalid.*'balanced'"):
        TrainConfig(sampler="oversample")
    with pytest.raises(ValueError, match="class_weights=.* is invalid"):
        TrainConfig(class_weights=[0.0, 0.0])
    assert TrainConfig(class_weights=[1, 2.5], sampler="balanced").sampler == "balanced"


def test_inverse_frequency_and_balanced_weights():
    labels = [0] * 6 + [1] * 3 + [2] * 1
    np.testing.assert_allclose(inverse_frequency_weights(labels, 4), [10 / 18, 10 / 9, 10 / 3, 0.0])
    per_row = balanced_sample_weights(labels, 3)
    assert per_row[:6].sum() == pytest.approx(per_row[6:9].sum()) == pytest.approx(per_row[9:].sum())


def test_balanced_sampler_is_balanced_deterministic_and_per_epoch():
    labels = np.array([0] * 90 + [1] * 10)
    weights = balanced_sample_weights(labels, 2)
    sampler = EpochBatchSampler(100, 10, shuffle=True, seed=3, sample_weights=weights)
    again = EpochBatchSampler(100, 10, shuffle=True, seed=3, sample_weights=weights)  # another process, or a resume
    drawn = []
    for epoch in range(20):
        sampler.use_epoch(epoch)
        again.use_epoch(epoch)
        batches = list(sampler)
        assert batches == list(again) and len(batches) == 10
        drawn += [i for batch in batches for i in batch]
    assert 0.4 < np.mean(labels[drawn]) < 0.6  # ~half the draws are the 10% class
    sampler.use_epoch(0)
    first = list(sampler)
    sampler.use_epoch(1)
    assert list(sampler) != first
    with pytest.raises(ValueError, match="sample_weights must hold 100"):
        EpochBatchSampler(100, 10, shuffle=True, sample_weights=np.ones(5))


def test_class_weights_change_the_training_loss(tmp_path):
    data = {"source": "sklearn_digits", "max_train_samples": 64, "max_eval_samples": 20}
    losses = {}
    for name, weights in (("plain", None), ("auto", "auto"), ("skewed", [8.0] + [1.0] * 9)):
        config = image_config(tmp_path / name, data, epochs=1, max_steps=2, class_weights=weights)
        trainer = hftransfer.TransferTrainer(config)
        result = trainer.train()
        losses[name] = result.history[0]["train_loss"]
        if weights == "auto":
            counts = np.bincount(trainer.data.train["label"], minlength=10)
            expected = counts.sum() / (10 * counts)
            np.testing.assert_allclose(trainer.class_weights.cpu().numpy(), expected, rtol=1e-6)
    assert trainer.class_weights[0] == 8.0
    assert losses["skewed"] != pytest.approx(losses["plain"], rel=1e-4)
    with pytest.raises(ValueError, match="class_weights has 3 weights but the data has 10 classes"):
        hftransfer.train(image_config(tmp_path / "bad", data, class_weights=[1, 1, 1]))


def test_balanced_sampler_order_is_fixed_per_epoch_and_trains(tmp_path):
    data = {"source": "sklearn_digits", "max_train_samples": 64, "max_eval_samples": 20}
    config = image_config(tmp_path, data, epochs=1, sampler="balanced")
    trainer = hftransfer.TransferTrainer(config)
    trainer.setup()
    sampler = trainer.train_sampler
    assert sampler.sample_weights is not None
    sampler.use_epoch(1)
    order = list(sampler)
    sampler.use_epoch(1)
    assert list(sampler) == order
    assert trainer.train().history[0]["epoch"] == 1


@pytest.mark.integration
def test_text_run_with_class_weights_balanced_sampler_and_accumulation_resumes_exactly(tmp_path, tiny_models):
    # Killed mid-epoch and resumed: the balanced sampler continues its epoch's order, the class weights and the
    # gradient accumulation resume too, so the weights equal an uninterrupted run's.
    csv = reviews_csv(tmp_path / "reviews.csv", 60)
    rows = csv.read_text().splitlines()
    csv.write_text("\n".join(rows + [r.replace("positive", "negative") for r in rows[1:8]]) + "\n")  # imbalance
    common = {"model": {"name": tiny_models["transformers_bert"], "head_dropout": 0.1},
              "data": {"source": str(csv), "validation_split": 0.2}, "class_weights": "auto",
              "sampler": "balanced", "gradient_accumulation_steps": 2, "batch_size": 8, "epochs": 2,
              "checkpoint_every_steps": 1, "progress_bar": False, "recipe": "full", "optim": {"lr": 1e-3}}
    clean = {**common, "output_dir": str(tmp_path / "clean" / "run")}
    killed = {**common, "output_dir": str(tmp_path / "killed" / "run")}
    # 53 train rows / 8 = 7 batches, 4 updates per epoch (accumulation 2): update 6 is mid epoch 2.
    run_killed_and_resumed(tmp_path, clean, killed, kill_step=6, last_checkpoint=6)
    assert_same_weights(saved_weights(clean["output_dir"]), saved_weights(killed["output_dir"]))
    ma, mb = (json.loads((Path(c["output_dir"]) / "metrics.json").read_text()) for c in (clean, killed))
    assert ma["final_eval"] == mb["final_eval"]


# ------------------------------------------------------------------------------------------------------ trackers


def test_unknown_or_missing_tracker_is_a_clear_error(monkeypatch, tmp_path):
    with pytest.raises(ConfigurationError, match="'neptune' is not a supported tracker"):
        check_trackers(["neptune"])
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ConfigurationError, match=r"pip install 'hftransfer\[mlflow\]'"):
        hftransfer.train(image_config(tmp_path, {"source": "sklearn_digits"}, report_to=["mlflow"]))
    assert not (tmp_path / "run" / "metrics.json").exists()
    assert check_trackers(["none"]) == []


class StepLosses(Callback):
    """(step, loss) of every optimizer step: the growth of the epoch's running loss sum (one batch per step)."""

    def __init__(self):
        self.steps: list[tuple[int, float]] = []
        self.seen = (0, 0.0)

    def on_step_end(self, trainer, state):
        count, total = self.seen if state["loss_count"] > self.seen[0] else (0, 0.0)
        self.steps.append((state["global_step"], state["loss_sum"] - total))
        self.seen = (state["loss_count"], state["loss_sum"])


def tracked_config(tmp_path: Path, tracker: str) -> dict:
    """A run with a held-out test split and a logged loss at every step, for the tracker read-back tests."""
    root = digit_folders(tmp_path / "digits")
    data = {"train": str(root / "train"), "validation": str(root / "val"), "test": str(root / "test")}
    return image_config(tmp_path, data, report_to=[tracker], log_every_steps=1)


@pytest.mark.integration
def test_mlflow_gets_hyperparameters_step_losses_epoch_and_test_metrics(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    losses = StepLosses()
    result = hftransfer.train(tracked_config(tmp_path, "mlflow"), callbacks=[losses])
    store = (result.output_dir / "logs" / "mlruns").resolve()
    client = MlflowClient(store.as_uri())
    experiment = client.get_experiment_by_name("hftransfer")
    run = client.search_runs([experiment.experiment_id])[0]
    assert run.data.params["optim.lr"] == "0.003" and run.data.params["epochs"] == "2"
    history = client.get_metric_history(run.info.run_id, "eval_accuracy")
    assert [h.step for h in history] == [row["step"] for row in result.history]
    assert [h.value for h in history] == pytest.approx([row["eval_accuracy"] for row in result.history])
    steps = client.get_metric_history(run.info.run_id, "train/loss")
    assert [h.step for h in steps] == [step for step, _ in losses.steps]  # every step's loss, in order
    assert [h.value for h in steps] == pytest.approx([loss for _, loss in losses.steps])
    for key in ("accuracy", "loss"):
        assert client.get_metric_history(run.info.run_id, f"test/{key}")[-1].value == pytest.approx(
            result.test_metrics[key]), key


TRACKIO_SCRIPT = textwrap.dedent("""
    import json, sys
    import hftransfer
    from trackio.sqlite_storage import SQLiteStorage

    losses = []

    class StepLosses(hftransfer.Callback):  # each step's loss: the growth of the epoch's running loss sum
        seen = (0, 0.0)

        def on_step_end(self, trainer, state):
            count, total = self.seen if state["loss_count"] > self.seen[0] else (0, 0.0)
            losses.append(state["loss_sum"] - total)
            self.seen = (state["loss_count"], state["loss_sum"])

    result = hftransfer.train(json.loads(sys.argv[1]), callbacks=[StepLosses()])
    runs = SQLiteStorage.get_runs("hftransfer")
    logs = SQLiteStorage.get_logs("hftransfer", runs[0])
    config = SQLiteStorage.get_run_config("hftransfer", runs[0])
    print(json.dumps({"runs": runs, "accuracy": [row.get("eval_accuracy") for row in logs if "eval_accuracy" in row],
                      "lr": config.get("optim.lr"), "expected": [r["eval_accuracy"] for r in result.history],
                      "step_losses": [row["train/loss"] for row in logs if "train/loss" in row],
                      "expected_losses": losses,
                      "test_accuracy": [row["test/accuracy"] for row in logs if "test/accuracy" in row],
                      "expected_test_accuracy": result.test_metrics["accuracy"]}))
""")


@pytest.mark.integration
def test_trackio_gets_hyperparameters_step_losses_epoch_and_test_metrics(tmp_path):
    script = tmp_path / "run_trackio.py"
    script.write_text(TRACKIO_SCRIPT)
    config = tracked_config(tmp_path, "trackio")
    env = {**os.environ, "TRACKIO_DIR": str(tmp_path / "trackio"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(script), json.dumps(config)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(next(line for line in done.stdout.splitlines() if line.startswith('{"runs"')))
    assert found["runs"] == ["run"] and found["lr"] == 0.003
    assert found["accuracy"] == pytest.approx(found["expected"]) and len(found["accuracy"]) == 2
    assert found["step_losses"] == pytest.approx(found["expected_losses"]) and found["step_losses"]
    assert found["test_accuracy"] == pytest.approx([found["expected_test_accuracy"]])


# ------------------------------------------------------------------------------------------------------ evaluate


def test_evaluate_writes_metrics_report_predictions_and_updates_the_card(trained_text, tmp_path):
    model_dir = trained_text.model_dir
    readme = model_dir / "README.md"
    readme.write_text(readme.read_text() + "\nMy own notes stay.\n")
    data = tmp_path / "new.csv"
    data.write_text("review,sentiment\nthe movie was very good,positive\nthe film was awful,negative\n"
                    "great fun,positive\n,negative\n")
    with pytest.raises(DataError, match="text_column='text' is not a column"):
        evaluate(model_dir, data, progress_bar=False)
    result = hftransfer.evaluate(model_dir, data, text_column="review", label_column="sentiment",
                                 output_dir=tmp_path / "eval", update_card=True, progress_bar=False)
    assert result.num_samples == 3 and len(result.skipped) == 1
    assert set(result.per_class["classes"]) == {"negative", "positive"}
    assert {"confusion_matrix.png", "metrics.json", "per_class.md", "predictions.csv"} <= {
        p.name for p in (tmp_path / "eval").iterdir()}
    rows = list(csv.DictReader((tmp_path / "eval" / "predictions.csv").read_text().splitlines()))
    assert [r["input"] for r in rows] == ["the movie was very good", "the film was awful", "great fun"]
    assert [r["label"] for r in rows] == ["positive", "negative", "positive"]
    correct = sum(int(r["correct"]) for r in rows)
    assert result.metrics["accuracy"] == pytest.approx(correct / 3)
    card = readme.read_text()
    meta = yaml.safe_load(card.split("---")[1])
    splits = [(r["dataset"]["name"], r["dataset"]["split"]) for r in meta["model-index"][0]["results"]]
    assert ("new", "new") in splits and any(split == "validation" for _, split in splits)
    assert "My own notes stay." in card and "## Results" in card
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("text,label\nso so,neutral\n")
    with pytest.raises(DataError, match=r"\['neutral'\] that are not among the model's 2 labels"):
        evaluate(model_dir, unknown, progress_bar=False)


def test_evaluate_cli_on_an_image_folder_split(trained_image, tmp_path, capsys):
    from hftransfer.cli import main

    result, root = trained_image
    out = tmp_path / "ev"
    assert main(["evaluate", str(result.model_dir), str(root), "--split", "test", "--output-dir", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "test (40 rows)" in printed and "accuracy" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["num_samples"] == 40
    assert main(["evaluate", str(result.model_dir), str(root), "--no-progress"]) == 2
    assert "several splits" in capsys.readouterr().err


EVAL_SCRIPT = "import sys; from hftransfer.cli import main; sys.exit(main(sys.argv[1:]))\n"


@pytest.mark.integration
def test_evaluate_on_two_processes_matches_one(trained_text, tmp_path):
    from helpers import free_port

    data = reviews_csv(tmp_path / "eval.csv", 11)  # odd: the last global batch is padded across processes
    script = tmp_path / "evaluate_cli.py"
    script.write_text(EVAL_SCRIPT)
    args = ["evaluate", str(trained_text.model_dir), str(data), "--batch-size", "4", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, str(script), *args, "--output-dir", str(tmp_path / "one")], env=env,
                            capture_output=True, text=True)
    assert single.returncode == 0, single.stderr[-3000:]
    launched = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
         free_port(), str(script), *args, "--output-dir", str(tmp_path / "two")],
        env=env, capture_output=True, text=True)
    assert launched.returncode == 0, launched.stderr[-4000:]
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert two["num_samples"] == one["num_samples"] == 11
    assert two["metrics"] == pytest.approx(one["metrics"], rel=1e-5)
    assert two["confusion_matrix"] == one["confusion_matrix"]
    rows_one = list(csv.reader((tmp_path / "one" / "predictions.csv").read_text().splitlines()))
    rows_two = list(csv.reader((tmp_path / "two" / "predictions.csv").read_text().splitlines()))
    assert [r[:4] for r in rows_two] == [r[:4] for r in rows_one]
    assert launched.stdout.count("rows):") == 1  # only the main process reports


@pytest.mark.integration
def test_evaluate_on_real_sst2_maps_integer_labels_by_name(trained_text, shared_data, tmp_path):
    dev = shared_data / "sst2" / "dev.csv"
    with pytest.raises(DataError, match=r"\['0', '1'\] that are not among"):
        evaluate(trained_text.model_dir, dev, progress_bar=False)
    result = evaluate(trained_text.model_dir, dev, label_names=["negative", "positive"], progress_bar=False)
    assert result.num_samples == 872 and result.per_class["classes"]["positive"]["support"] == 444


# ------------------------------------------------------------------------------------------------------- predict


def test_predict_folder_and_table_report_bad_rows_without_stopping(trained_image, tmp_path):
    result, root = trained_image
    folder = tmp_path / "imgs"
    folder.mkdir()
    for f in sorted((root / "test" / "c0").iterdir())[:3]:
        (folder / f.name).write_bytes(f.read_bytes())
    (folder / "broken.png").write_text("not an image")
    out = tmp_path / "pred.csv"
    rows = predict_file(result.model_dir, folder, out, top_k=2, batch_size=2, progress_bar=False)
    assert len(rows) == 4
    bad = [r for r in rows if r["error"]]
    assert len(bad) == 1 and "broken.png" in bad[0]["error"] and "cannot read image" in bad[0]["error"]
    table = list(csv.DictReader(out.read_text().splitlines()))
    assert list(table[0]) == ["row", "input", "label_1", "score_1", "label_2", "score_2", "error"]
    good = [r for r in table if not r["error"]]
    assert len(good) == 3 and all(float(r["score_1"]) >= float(r["score_2"]) for r in good)
    listing = tmp_path / "list.csv"
    listing.write_text(f"path\n{folder.name}/{min(folder.iterdir()).name}\n{folder.name}/missing.png\n")
    jsonl = tmp_path / "pred.jsonl"
    rows = predict_file(result.model_dir, listing, jsonl, image_column="path", progress_bar=False)
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [bool(r["error"]) for r in records] == [False, True] and "missing file" in records[1]["error"]
    assert records[0]["predictions"][0]["label"] in {"c0", "c1", "c2"}
    with pytest.raises(DataError, match="INPUT .*nope.png.* does not exist"):
        predict_file(result.model_dir, tmp_path / "nope.png", progress_bar=False)
    with pytest.raises(DataError, match="--output .* must end in"):
        predict_file(result.model_dir, folder, tmp_path / "out.txt", progress_bar=False)


def test_predict_text_reads_files_stdin_and_tables(trained_text, tmp_path, monkeypatch, capsys):
    from hftransfer.cli import main

    model = hftransfer.AutoTransfer.from_pretrained(trained_text.model_dir)
    sentences = tmp_path / "sentences.txt"
    sentences.write_text("the movie was good\n\nthe film was bad\n")
    rows = predict_file(model, str(sentences), progress_bar=False)
    # The path is read as a file (3 lines, one empty), not classified as the sentence "sentences.txt".
    assert [r["input"] for r in rows] == ["the movie was good", "sentences.txt line 2", "the film was bad"]
    assert rows[1]["error"] == "empty line" and rows[0]["predictions"] and not rows[1]["predictions"]
    expected = model.predict(["the movie was good", "the film was bad"], top_k=1)
    assert rows[0]["predictions"][0]["label"] == expected[0][0]["label"]
    table = tmp_path / "reviews.parquet"
    import pandas as pd

    pd.DataFrame({"body": ["great fun", None, "awful"]}).to_parquet(table)
    with pytest.raises(DataError, match="text_column='text' is not a column"):
        predict_file(model, table, progress_bar=False)
    rows = predict_file(model, table, text_column="body", progress_bar=False)
    assert [bool(r["error"]) for r in rows] == [False, True, False]
    monkeypatch.setattr(sys, "stdin", io.StringIO("the movie was good\nthe film was dull\n"))
    out = tmp_path / "stdin.csv"
    assert main(["predict", str(trained_text.model_dir), "-", "--output", str(out), "--top-k", "2", "--no-bf16",
                 "--no-progress"]) == 0
    lines = list(csv.DictReader(out.read_text().splitlines()))
    assert [r["input"] for r in lines] == ["the movie was good", "the film was dull"] and lines[0]["label_2"]
    assert main(["predict", str(trained_text.model_dir), str(tmp_path / "missing.csv")]) == 2
    assert "INPUT" in capsys.readouterr().err


def test_bf16_is_chosen_only_where_the_cpu_runs_it(monkeypatch, trained_image):
    from hftransfer.inference import precision

    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "fast_bf16", lambda device: True)
    assert resolve_precision("auto", cpu) == "bf16" and resolve_precision("fp32", cpu) == "fp32"
    monkeypatch.setattr(precision, "fast_bf16", lambda device: False)
    assert resolve_precision("auto", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(ConfigurationError, match="precision='fp16'"):
        resolve_precision("fp16", cpu)
    # bf16 autocast gives (almost) the fp32 scores.
    result, root = trained_image
    kwargs = {"top_k": 1, "progress_bar": False}
    fp32 = predict_file(result.model_dir, root / "test" / "c1", precision="fp32", **kwargs)
    bf16 = predict_file(result.model_dir, root / "test" / "c1", precision="bf16", **kwargs)
    diffs = [abs(a["predictions"][0]["score"] - b["predictions"][0]["score"]) for a, b in zip(fp32, bf16)
             if a["predictions"][0]["label"] == b["predictions"][0]["label"]]
    assert len(diffs) >= len(fp32) - 2 and max(diffs) < 0.05


@pytest.mark.integration
def test_predict_and_evaluate_compile_give_the_eager_numbers(trained_text, tmp_path, capsys):
    from hftransfer.cli import main

    model = hftransfer.AutoTransfer.from_pretrained(trained_text.model_dir)
    sentences = ["the movie was good", "the film was very very awful indeed", "fun"]  # three lengths: dynamic shapes
    eager = predict_file(model, sentences, top_k=2, precision="fp32", progress_bar=False)
    assert getattr(model, "_compiled_call_impl", None) is None
    compiled = predict_file(model, sentences, top_k=2, precision="fp32", progress_bar=False, compile=True)
    assert model._compiled_call_impl is not None  # compiled in place
    for a, b in zip(eager, compiled):
        assert [p["label"] for p in a["predictions"]] == [p["label"] for p in b["predictions"]]
        assert [p["score"] for p in a["predictions"]] == pytest.approx([p["score"] for p in b["predictions"]],
                                                                       abs=1e-4)
    data = reviews_csv(tmp_path / "held_out.csv", 12)
    plain = evaluate(trained_text.model_dir, data, progress_bar=False)
    assert main(["evaluate", str(trained_text.model_dir), str(data), "--compile", "--no-progress",
                 "--output-dir", str(tmp_path / "eval")]) == 0
    scored = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert scored["metrics"]["accuracy"] == plain.metrics["accuracy"]
    assert scored["metrics"]["loss"] == pytest.approx(plain.metrics["loss"], abs=1e-4)


@pytest.mark.integration
def test_predict_compile_without_a_compiler_says_why_and_predicts(trained_image, monkeypatch, capsys):
    from hftransfer.utils import compile as compile_utils

    monkeypatch.setattr(compile_utils.shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    result, root = trained_image
    rows = predict_file(result.model_dir, root / "test" / "c1", progress_bar=False, compile=True)
    assert rows and all(r["predictions"] for r in rows)
    err = capsys.readouterr().err
    assert "--compile cannot apply" in err and "C++ compiler" in err


@pytest.mark.integration
def test_evaluate_a_hub_model_writes_its_updated_card_to_output_dir(trained_text, tmp_path):
    # The model is pulled from the local hub server; --update-card writes the hub card plus the new entry locally.
    from hub_server import hf_env, start_hub

    folder = trained_text.model_dir
    with start_hub(tmp_path, token=None) as hub:
        hub.create_repo("tester/reviews")
        hub.upload_files("tester/reviews", {p.relative_to(folder).as_posix(): p.read_bytes()
                                            for p in folder.rglob("*") if p.is_file()})
        data = reviews_csv(tmp_path / "fresh.csv", 6)
        out = tmp_path / "eval"
        env = {**hf_env(hub, tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
        done = subprocess.run([sys.executable, "-m", "hftransfer.cli", "evaluate", "tester/reviews", str(data),
                               "--output-dir", str(out), "--update-card", "--no-progress"],
                              env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    card = (out / "README.md").read_text()
    assert card.count("## Results") == 1  # the hub card's text came along
    meta = yaml.safe_load(card.split("---")[1])
    splits = {r["dataset"]["split"] for r in meta["model-index"][0]["results"]}
    assert {"validation", "fresh"} <= splits
    assert json.loads((out / "metrics.json").read_text())["num_samples"] == 6


TRAIN_SCRIPT = "import json, sys, hftransfer; hftransfer.train(json.loads(sys.argv[1]))\n"


@pytest.mark.integration
def test_balanced_sampler_and_class_weights_on_two_processes_match_one(tmp_path):
    # split_batches: both processes draw the same balanced order and slice each global batch, and each slice's
    # class-weighted loss is rescaled to the global batch's weight sum, so two processes end with the weights and
    # losses of one; the test split is scored on both.
    from safetensors.torch import load_file

    from helpers import free_port

    root = digit_folders(tmp_path / "digits")
    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT)
    # 80 rows = 5 full batches: accelerate pads an uneven last batch with repeated rows, which would differ.
    base = {"source": str(root), "test": str(root / "test"), "max_train_samples": 80}
    configs = {n: image_config(tmp_path / n, base, sampler="balanced", class_weights="auto", epochs=2,
                               optim={"name": "sgd", "lr": 0.05}) for n in ("one", "two")}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(script), json.dumps(configs["one"])], check=True, env=env, capture_output=True)
    launched = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
         free_port(), str(script), json.dumps(configs["two"])], env=env, capture_output=True, text=True)
    assert launched.returncode == 0, launched.stderr[-4000:]
    runs = {n: Path(c["output_dir"]) for n, c in configs.items()}
    metrics = {n: json.loads((run / "metrics.json").read_text()) for n, run in runs.items()}
    assert metrics["two"]["num_processes"] == 2
    assert metrics["two"]["test_eval"]["accuracy"] == pytest.approx(metrics["one"]["test_eval"]["accuracy"], abs=0.03)
    for r1, r2 in zip(metrics["one"]["history"], metrics["two"]["history"]):
        assert r2["train_loss"] == pytest.approx(r1["train_loss"], rel=1e-4)
    w1, w2 = (load_file(run / "model" / "model.safetensors") for run in runs.values())
    for key in w1:
        torch.testing.assert_close(w1[key], w2[key], rtol=1e-3, atol=1e-4)
