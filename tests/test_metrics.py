"""Packaged offline `evaluate` modules, the classification metric API and report plots.

Hand-computed example used throughout (3 classes):
    refs  = [0, 0, 1, 2, 2, 2]
    preds = [0, 1, 1, 2, 2, 0]
    class 0: TP 1, FP 1, FN 1 -> P 1/2, R 1/2, F1 1/2, support 2
    class 1: TP 1, FP 1, FN 0 -> P 1/2, R 1,   F1 2/3, support 1
    class 2: TP 2, FP 0, FN 1 -> P 1,   R 2/3, F1 4/5, support 3
    accuracy 4/6; macro P 2/3, R 13/18, F1 59/90; weighted P 3/4, R 2/3, F1 61/90; micro = accuracy.
"""

from __future__ import annotations

import sys
import tomllib
import warnings
from pathlib import Path

import numpy as np
import pytest

from hftransfer.metrics import (
    available_metrics,
    classification_report,
    compute_classification_metrics,
    confusion_matrix,
    format_report_markdown,
    load_metric,
    plot_confusion_matrix,
    plot_training_curves,
)
from hftransfer.metrics.classification import METRIC_REGISTRY


REFS = [0, 0, 1, 2, 2, 2]
PREDS = [0, 1, 1, 2, 2, 0]
LABELS = ["cat", "dog", "bird"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _evaluate_cache(tmp_path, monkeypatch):
    # evaluate reads its cache paths at import time, so patch its config as well as the environment.
    import evaluate

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_home" / "datasets"))
    monkeypatch.setattr(evaluate.config, "HF_METRICS_CACHE", tmp_path / "hf_home" / "metrics")


def _one_hot_logits(preds, num_classes=3):
    logits = np.full((len(preds), num_classes), -1.0)
    logits[np.arange(len(preds)), preds] = 2.0
    return logits


def test_every_packaged_module_loads_offline_with_metadata():
    # each registered module loads from its local folder and carries description, citation and features
    import evaluate

    assert available_metrics() == ["accuracy", "f1", "precision", "recall", "top_k_accuracy"]
    for name in available_metrics():
        module = load_metric(name)
        assert isinstance(module, evaluate.EvaluationModule)
        assert module.name == name
        assert module.description.strip() and module.citation.strip() and module.inputs_description.strip()
        assert set(module.features) == {"predictions", "references"}
        assert evaluate.load(str(METRIC_REGISTRY[name])).name == name  # the plain evaluate entry point works too


def test_accuracy_matches_hand_computed_value():
    # 4 of 6 predictions are right; normalize=False counts them
    accuracy = load_metric("accuracy")
    assert accuracy.compute(predictions=PREDS, references=REFS) == {"accuracy": pytest.approx(4 / 6)}
    assert accuracy.compute(predictions=PREDS, references=REFS, normalize=False) == {"accuracy": 4}


@pytest.mark.parametrize(
    "name, average, expected",
    [
        ("precision", "macro", 2 / 3),
        ("recall", "macro", 13 / 18),
        ("f1", "macro", 59 / 90),
        ("precision", "weighted", 3 / 4),
        ("recall", "weighted", 2 / 3),
        ("f1", "weighted", 61 / 90),
        ("precision", "micro", 4 / 6),
        ("recall", "micro", 4 / 6),
        ("f1", "micro", 4 / 6),
    ],
)
def test_averaged_scores_match_hand_computed_values(name, average, expected):
    # precision/recall/F1 with macro, weighted and micro averaging equal the values worked out in the module doc
    result = load_metric(name).compute(predictions=PREDS, references=REFS, average=average)
    assert result == {name: pytest.approx(expected)}


def test_default_average_is_macro_and_labels_widen_the_average():
    # default is macro; labels=[0..3] adds the absent class 3 as a zero (no warning thanks to zero_division=0)
    precision = load_metric("precision")
    assert precision.compute(predictions=PREDS, references=REFS)["precision"] == pytest.approx(2 / 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        widened = precision.compute(predictions=PREDS, references=REFS, labels=[0, 1, 2, 3])
    assert widened["precision"] == pytest.approx((0.5 + 0.5 + 1 + 0) / 4)


def test_binary_average_reports_the_positive_class():
    # average="binary" scores pos_label only: class 1 in [1,1,0,0] vs preds [1,0,1,0] has P = R = F1 = 1/2
    f1 = load_metric("f1")
    assert f1.compute(predictions=[1, 0, 1, 0], references=[1, 1, 0, 0], average="binary")["f1"] == pytest.approx(0.5)


def test_unsupported_average_is_rejected_with_the_choices():
    # a typo in `average` names the argument and lists the valid values
    with pytest.raises(ValueError, match=r"`average` must be one of .*'macro'.* got 'macr'"):
        load_metric("f1").compute(predictions=PREDS, references=REFS, average="macr")


def test_add_batch_accumulates_like_a_single_compute():
    # streaming two batches through add_batch gives the same F1 as one call
    f1 = load_metric("f1")
    f1.add_batch(predictions=PREDS[:3], references=REFS[:3])
    f1.add_batch(predictions=PREDS[3:], references=REFS[3:])
    assert f1.compute(average="macro")["f1"] == pytest.approx(59 / 90)


def test_evaluate_combine_merges_the_packaged_modules():
    # evaluate.combine over the local modules returns every score with default macro averaging
    import evaluate

    combined = evaluate.combine([load_metric(name) for name in ("accuracy", "f1", "precision", "recall")])
    combined.add_batch(predictions=PREDS, references=REFS)
    expected = {"accuracy": 4 / 6, "f1": 59 / 90, "precision": 2 / 3, "recall": 13 / 18}
    assert combined.compute() == pytest.approx(expected)


TOP_K_SCORES = [
    [0.1, 0.5, 0.3, 0.1],  # true 2 ranks 2nd
    [0.7, 0.1, 0.1, 0.1],  # true 0 ranks 1st
    [0.2, 0.3, 0.4, 0.1],  # true 3 ranks 4th
    [0.1, 0.2, 0.3, 0.4],  # true 1 ranks 3rd
]
TOP_K_REFS = [2, 0, 3, 1]


@pytest.mark.filterwarnings("ignore:'k' .* greater than or equal to 'n_classes'")
@pytest.mark.parametrize("k, expected", [(1, 1 / 4), (2, 2 / 4), (3, 3 / 4), (4, 1.0)])
def test_top_k_accuracy_counts_hits_within_the_k_best_scores(k, expected):
    # the true class must be among the k highest scores (ranks worked out in TOP_K_SCORES comments)
    top_k = load_metric("top_k_accuracy")
    assert top_k.compute(predictions=TOP_K_SCORES, references=TOP_K_REFS, k=k) == {"top_k_accuracy": expected}


def test_top_k_accuracy_is_invariant_to_logits_vs_probabilities():
    # only the order matters: log-probabilities (logits) give the same result as probabilities
    top_k = load_metric("top_k_accuracy")
    logits = np.log(np.asarray(TOP_K_SCORES))
    assert top_k.compute(predictions=logits, references=TOP_K_REFS, k=2)["top_k_accuracy"] == 0.5


def test_top_k_accuracy_handles_missing_classes_and_two_classes():
    # references may miss classes; with two classes top-1 is argmax accuracy even for margins inside [0, 1]
    top_k = load_metric("top_k_accuracy")
    assert top_k.compute(predictions=TOP_K_SCORES[:2], references=[1, 0], k=1)["top_k_accuracy"] == 1.0
    two = [[0.3, 0.7], [0.9, 0.1], [2.0, -1.0]]
    assert top_k.compute(predictions=two, references=[1, 1, 0], k=1)["top_k_accuracy"] == pytest.approx(2 / 3)
    assert top_k.compute(predictions=two, references=[1, 1, 0], k=2)["top_k_accuracy"] == 1.0


def test_top_k_accuracy_rejects_a_non_positive_k():
    # k=0 is a user error, reported with the argument name
    with pytest.raises(ValueError, match="`k` must be a positive integer, got 0"):
        load_metric("top_k_accuracy").compute(predictions=TOP_K_SCORES, references=TOP_K_REFS, k=0)


def test_unknown_metric_name_lists_the_available_ones():
    # a name that is not packaged fails fast, naming what was asked and what exists
    with pytest.raises(ValueError, match=r"Unknown metric name 'bleu'. Available metrics: accuracy, f1, precision"):
        load_metric("bleu")


def test_compute_classification_metrics_hand_values_and_top_k_skipping():
    # argmax of the logits reproduces PREDS; top-k with k >= num_classes (3, 5) is skipped
    logits = _one_hot_logits(PREDS)
    results = compute_classification_metrics(logits, np.asarray(REFS), LABELS, top_k=(1, 2, 3, 5))
    expected_keys = {"accuracy", "f1_macro", "precision_macro", "recall_macro", "top1_accuracy", "top2_accuracy"}
    assert set(results) == expected_keys
    assert results["accuracy"] == pytest.approx(4 / 6)
    assert results["top1_accuracy"] == pytest.approx(4 / 6)
    assert results["f1_macro"] == pytest.approx(59 / 90)
    assert results["precision_macro"] == pytest.approx(2 / 3)
    assert results["recall_macro"] == pytest.approx(13 / 18)
    assert all(type(value) is float for value in results.values())


def test_compute_classification_metrics_top5_on_many_classes():
    # with 10 classes the default top_k=(5,) is reported; TOP_K ranks padded with 6 low-scoring classes
    scores = np.concatenate([np.asarray(TOP_K_SCORES), np.zeros((4, 6))], axis=1)
    results = compute_classification_metrics(scores, np.asarray(TOP_K_REFS), [f"c{i}" for i in range(10)])
    assert results["top5_accuracy"] == 1.0
    assert results["accuracy"] == 0.25


@pytest.mark.parametrize(
    "scores, refs, labels, message",
    [
        (np.zeros((6, 3)), np.asarray(REFS), ["a", "b"], "has 3 columns but `label_names` has 2 names"),
        (np.zeros(6), np.asarray(REFS), LABELS, r"must have shape \(num_samples, num_classes\)"),
        (np.zeros((6, 3)), np.asarray([0, 1, 2, 3, 0, 0]), LABELS, r"class ids in \[0, 2\]"),
        (np.zeros((5, 3)), np.asarray(REFS), LABELS, r"`references` must have shape \(5,\)"),
    ],
)
def test_compute_classification_metrics_validates_inputs(scores, refs, labels, message):
    # shape, label-count and class-id mistakes are reported with the offending argument and value
    with pytest.raises(ValueError, match=message):
        compute_classification_metrics(scores, refs, labels)


def test_classification_report_hand_values_and_zero_division():
    # per-class and averaged values; a class never predicted nor present scores 0 without a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = classification_report(PREDS, REFS, LABELS + ["fish"])
    assert report["classes"]["cat"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert report["classes"]["dog"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert report["classes"]["bird"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert report["classes"]["fish"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert report["macro_avg"]["f1"] == pytest.approx((0.5 + 2 / 3 + 0.8 + 0) / 4)
    assert report["weighted_avg"]["f1"] == pytest.approx(61 / 90)
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["num_samples"] == 6


def test_confusion_matrix_rows_are_true_classes():
    # rows = true class, columns = predicted class, counts from the hand example
    assert confusion_matrix(PREDS, REFS, 3) == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert confusion_matrix([0], [0], 2) == [[1, 0], [0, 0]]  # classes absent from the data still get a row


def test_confusion_matrix_rejects_out_of_range_ids():
    # a prediction id >= num_labels is reported, not silently dropped
    with pytest.raises(ValueError, match=r"`preds` must hold integer class ids in \[0, 1\]"):
        confusion_matrix([0, 2], [0, 1], 2)


def test_format_report_markdown_renders_a_table():
    # one row per class plus averages and accuracy; a '|' in a label name is escaped
    table = format_report_markdown(classification_report(PREDS, REFS, ["c|at", "dog", "bird"]))
    lines = table.splitlines()
    assert lines[0] == "| Class | Precision | Recall | F1 | Support |"
    assert "| c\\|at | 0.5000 | 0.5000 | 0.5000 | 2 |" in lines
    assert any(line.startswith("| **macro avg** |") for line in lines)
    assert any(line.startswith("| **weighted avg** |") for line in lines)
    assert lines[-1] == "| **accuracy** | | | 0.6667 | 6 |"
    with pytest.raises(ValueError, match="classification_report"):
        format_report_markdown({"accuracy": 1.0})


def test_plot_confusion_matrix_writes_a_png(tmp_path):
    # the figure is a real PNG, and parent folders are created
    path = plot_confusion_matrix(confusion_matrix(PREDS, REFS, 3), LABELS, tmp_path / "figs" / "cm.png")
    assert path.read_bytes()[:8] == PNG_MAGIC
    normalized = plot_confusion_matrix([[1, 1], [0, 3]], ["a", "b"], tmp_path / "cm_norm.png", normalize=True)
    assert normalized.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match=r"one row per label name \(2x2\)"):
        plot_confusion_matrix([[1, 2, 3]], ["a", "b"], tmp_path / "bad.png")


def test_plot_training_curves_writes_a_png(tmp_path):
    # losses and eval_* metrics against epoch, tolerating rows where a metric is missing
    history = [
        {"epoch": 1, "train_loss": 1.2, "eval_loss": 1.0, "eval_accuracy": 0.5},
        {"epoch": 2, "train_loss": 0.8, "eval_loss": 0.9, "eval_accuracy": 0.6, "eval_f1_macro": 0.55},
        {"epoch": 3, "train_loss": 0.5},
    ]
    path = plot_training_curves(history, tmp_path / "curves.png")
    assert path.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="`history` is empty"):
        plot_training_curves([], tmp_path / "empty.png")


def test_plots_explain_how_to_install_matplotlib(tmp_path, monkeypatch):
    # without matplotlib the error points to the `report` extra
    for module in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError, match=r"pip install hftransfer\[report\]"):
        plot_training_curves([{"epoch": 1, "train_loss": 1.0}], tmp_path / "curves.png")


def test_package_data_globs_ship_the_metric_modules_and_card_template():
    # pyproject's package-data patterns match every module script and the packaged card template
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["hftransfer"]
    package = REPO_ROOT / "hftransfer"
    shipped = {path for pattern in patterns for path in package.glob(pattern)}
    for module_dir in METRIC_REGISTRY.values():
        assert module_dir / f"{module_dir.name}.py" in shipped
    assert package / "hub" / "templates" / "model_card.md" in shipped
