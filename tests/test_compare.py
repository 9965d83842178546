"""hftransfer.compare: planning errors before any run, resume of finished rows, mean +- std table, real runs."""

from __future__ import annotations

import importlib
import json

import pytest

from hftransfer.errors import ConfigurationError, ModelNameError

from helpers import tiny_config


# the module, not the function bound over its name in the package (hftransfer.compare)
compare_module = importlib.import_module("hftransfer.compare")


def _no_launch(*args, **kwargs):
    raise AssertionError("compare launched a run")


def _fake_finished(run_dir, accuracy: float, wall: float, trainable: int = 1234) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics = {"best_metric": accuracy, "metric_for_best": "accuracy", "selection_split": "validation",
               "parameters": {"trainable_params": trainable, "all_params": 10 * trainable},
               "history": [{"train_samples_per_s": 10.0}, {"train_samples_per_s": 20.0}],
               "test_eval": {"accuracy": accuracy - 0.1}}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    (run_dir / "compare_run.json").write_text(json.dumps({"wall_s": wall, "peak_rss_mb": 100.0}))


def test_bad_input_fails_before_any_run(tmp_path, monkeypatch):
    monkeypatch.setattr(compare_module, "_launch", _no_launch)
    config = tiny_config(tmp_path)
    with pytest.raises(ConfigurationError, match="recipes \\['nope'\\] are unknown"):
        compare_module.compare(config, ["full", "nope"], output_dir=tmp_path / "c")
    with pytest.raises(ModelNameError, match="not_a_model"):
        compare_module.compare(config, ["full"], ["timm:not_a_model"], output_dir=tmp_path / "c")
    with pytest.raises(ConfigurationError, match="seeds=0"):
        compare_module.compare(config, ["full"], seeds=0, output_dir=tmp_path / "c")
    with pytest.raises(ConfigurationError, match="twice"):
        compare_module.compare(config, ["full", "full"], output_dir=tmp_path / "c")
    with pytest.raises(ConfigurationError, match="launcher='mpi'"):
        compare_module.compare(config, ["full"], launcher="mpi", output_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_a_learning_rate_set_in_the_config_is_flagged_when_recipes_differ(tmp_path, caplog):
    # tiny_config sets optim.lr: compared recipes would all train at it, not at their own defaults. Said up front.
    config = tiny_config(tmp_path)
    assert compare_module.shared_training_options(config) == ["optim.lr=0.003"]
    with caplog.at_level("WARNING", logger="hftransfer.compare"):
        compare_module._plan(config, ["full", "linear_probe"], None, 1, [])
    assert "sets optim.lr=0.003: every recipe (full, linear_probe) trains with these values" in caplog.text
    caplog.clear()
    del config["optim"]
    with caplog.at_level("WARNING", logger="hftransfer.compare"):
        compare_module._plan(config, ["full", "linear_probe"], None, 1, [])
    assert compare_module.shared_training_options(config) == [] and caplog.text == ""


def test_finished_rows_are_kept_and_only_missing_ones_run(tmp_path, monkeypatch):
    config = tiny_config(tmp_path)
    out = tmp_path / "c"
    model = "timm_test_convnext"
    for recipe, accs in (("full", (0.9, 0.8)), ("linear_probe", (0.5, 0.7))):
        for seed, acc in zip((42, 43), accs):
            _fake_finished(out / "runs" / f"{model}--{recipe}--seed{seed}", acc, wall=10.0 + seed - 42)
    monkeypatch.setattr(compare_module, "_launch", _no_launch)
    result = compare_module.compare(config, ["full", "linear_probe"], seeds=2, output_dir=out)
    assert all(run.resumed and run.status == "done" for run in result.runs) and len(result.runs) == 4
    full, probe = result.table
    assert (full["recipe"], full["done"], full["seeds"]) == ("full", 2, 2)
    assert full["validation"]["mean"] == pytest.approx(0.85)
    assert full["validation"]["std"] == pytest.approx(0.0707107, rel=1e-5)  # sample std of (0.9, 0.8)
    assert full["test"]["mean"] == pytest.approx(0.75) and full["wall_s"]["mean"] == pytest.approx(10.5)
    assert full["train_samples_per_s"]["mean"] == pytest.approx(15.0) and full["trainable_params"] == 1234
    assert result.best == "timm:test_convnext / full"
    assert sorted(p.name for p in out.glob("compare.*")) == ["compare.json", "compare.md", "compare.png"]
    # The plot shows the held-out split when every row has it, never the selection split beside it.
    assert compare_module.plotted_split(result.table) == "test"
    assert compare_module.plotted_split([{**full, "test": None}, probe]) == "validation"
    table = (out / "compare.md").read_text()
    assert "| `timm:test_convnext` | full | 2/2 | 0.8500 +- 0.0707 (accuracy, validation) | 0.7500 +- 0.0707 |" in (
        table)

    # A killed compare: one row never finished. Only that row runs again.
    (out / "runs" / f"{model}--linear_probe--seed43" / "metrics.json").unlink()
    launched = []

    def fake_launch(config_path, run_dir, launcher, num_processes, log):
        launched.append(run_dir.name)
        assert "recipe: linear_probe" in config_path.read_text() and "seed: 43" in config_path.read_text()
        _fake_finished(run_dir, 0.6, wall=1.0)
        log.write_text("ok\n")
        return 0, 1.0, 50.0

    monkeypatch.setattr(compare_module, "_launch", fake_launch)
    again = compare_module.compare(config, ["full", "linear_probe"], seeds=2, output_dir=out)
    assert launched == [f"{model}--linear_probe--seed43"]
    assert again.table[1]["validation"]["mean"] == pytest.approx(0.55)


def test_card_section_goes_into_the_best_runs_card_once(tmp_path, monkeypatch):
    config = tiny_config(tmp_path)
    out = tmp_path / "c"
    for recipe, acc in (("full", 0.7), ("linear_probe", 0.9)):
        _fake_finished(out / "runs" / f"timm_test_convnext--{recipe}--seed42", acc, wall=5.0)
    card = out / "runs" / "timm_test_convnext--linear_probe--seed42" / "model" / "README.md"
    card.parent.mkdir()
    card.write_text("---\nlicense: mit\n---\n# my model\n\nuser notes\n")
    monkeypatch.setattr(compare_module, "_launch", _no_launch)
    with pytest.raises(ConfigurationError, match="push_to='not a repo'"):
        compare_module.compare(config, ["full", "linear_probe"], output_dir=out, push_to="not a repo")
    for _ in range(2):  # a second call replaces the section
        result = compare_module.compare(config, ["full", "linear_probe"], output_dir=out, card=True)
    assert result.card_path == card
    text = card.read_text()
    assert text.startswith("---\nlicense: mit\n---\n# my model\n\nuser notes\n\n<!-- hftransfer:begin comparison -->")
    assert text.count("<!-- hftransfer:begin comparison -->") == 1 and text.rstrip().endswith(
        "<!-- hftransfer:end comparison -->")
    assert "| `timm:test_convnext` | linear_probe | 1/1 | 0.9000 (accuracy, validation) |" in text


def test_a_failed_run_is_reported_and_the_rest_continue(tmp_path, monkeypatch):
    def failing(config_path, run_dir, launcher, num_processes, log):
        log.write_text("Traceback ...\nValueError: boom\n")
        return 1, 0.5, 10.0

    monkeypatch.setattr(compare_module, "_launch", failing)
    result = compare_module.compare(tiny_config(tmp_path), ["full"], output_dir=tmp_path / "c")
    assert [r.status for r in result.runs] == ["failed"] and "ValueError: boom" in result.runs[0].error
    assert result.best is None and "failed: `timm:test_convnext`" in (tmp_path / "c" / "compare.md").read_text()


@pytest.mark.integration
def test_compare_two_recipes_in_fresh_processes(tmp_path):
    from hftransfer.cli import main

    config = tiny_config(tmp_path, epochs=1)
    path = tmp_path / "config.json"  # YAML is a superset of JSON
    path.write_text(json.dumps(config))
    code = main(["compare", str(path), "--recipes", "linear_probe,full", "--output-dir", str(tmp_path / "c")])
    assert code == 0
    saved = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert [r["recipe"] for r in saved["runs"]] == ["linear_probe", "full"]
    for run in saved["runs"]:
        assert run["status"] == "done" and 0.0 <= run["validation"] <= 1.0 and run["wall_s"] > 0
        assert run["peak_rss_mb"] > 50 and run["trainable_params"] > 0
    probe, full = saved["table"]
    assert probe["trainable_params"] < full["trainable_params"]
