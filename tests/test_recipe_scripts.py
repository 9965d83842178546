"""What a user runs: every example config, `python -m hftransfer.recipes` (also under `accelerate launch -m`),
`hftransfer predict` and an installed wheel. Tiny random models stand in for the real backbones (overrides on the
command line)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import hftransfer
from hftransfer import AutoTransfer
from hftransfer.recipes.examples import example_configs
from hftransfer.training import TrainConfig

from helpers import free_port, text_csv


pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "recipes" / "configs"
TINY_IMAGE = ["model.name=timm:test_convnext", "model.pretrained=false", "model.image_size=32",
              "data={source: sklearn_digits, max_train_samples: 64, max_eval_samples: 40}"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
    [str(REPO), *([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])])}


def tiny_overrides(config: Path, tmp_path: Path, tiny_models: dict[str, str]) -> list[str]:
    """Swap a config's real backbone and data for tiny ones; everything else (recipe, optim, precision...) stays."""
    common = ["epochs=1", "max_steps=2", "batch_size=8", f"output_dir={tmp_path / config.stem}",
              "progress_bar=false", "early_stopping_patience=null"]
    data = TrainConfig.from_yaml(config).data
    tables = (".csv", ".tsv", ".json", ".jsonl", ".parquet")
    if str(data.train or data.source or "").endswith(tables) or "minilm" in config.name.lower():  # a text config
        data = f"data={{source: {text_csv(tmp_path)}, validation_split: 0.25}}"
        return [f"model.name={tiny_models['transformers_bert']}", "model.pretrained=false", data, *common]
    loaded = TrainConfig.from_yaml(config)
    # vpt needs a vision transformer: its config already names a tiny random one; keep it, swap only the data.
    image = [TINY_IMAGE[-1]] if loaded.recipe == "vpt" else TINY_IMAGE
    # Domain adaptation configs also read target data: tiny unlabelled and labelled target sets.
    target = []
    if loaded.target is not None:
        target.append("target={source: sklearn_digits, max_train_samples: 48, max_eval_samples: 8}")
    if loaded.target_eval is not None:
        target.append("target_eval={source: sklearn_digits, max_train_samples: 24, max_eval_samples: 8}")
    return [*image, *target, *common]


@pytest.mark.parametrize("name", sorted(example_configs()))
def test_every_example_config_trains_a_step_with_a_tiny_model(name, tmp_path, tiny_models):
    # Each shipped config runs its own recipe, optimizer, schedule, precision and augmentation for two steps.
    path = CONFIGS / name
    config = TrainConfig.from_yaml(path, tiny_overrides(path, tmp_path, tiny_models))
    assert config.recipe == TrainConfig.from_yaml(path).recipe
    result = hftransfer.train(config)
    metrics = json.loads((result.output_dir / "metrics.json").read_text())
    assert metrics["recipe"] == config.recipe and metrics["history"][0]["step"] == 2
    if config.mixed_precision == "auto":  # the examples are hardware-neutral: what auto chose, and why, is recorded
        assert metrics["mixed_precision"] == metrics["mixed_precision_auto"]["mixed_precision"] in ("no", "bf16")
    else:
        assert metrics["mixed_precision"] == config.mixed_precision
    assert AutoTransfer.from_pretrained(result.model_dir).method.name == config.recipe


def run_script(args: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=ENV, timeout=600)


MODULE = ["-m", "hftransfer.recipes"]  # the one entry point of every recipe config (also from a wheel install)


def test_the_module_runs_the_recipe_a_config_names(tmp_path):
    # recipe=lora on the full demo config: the override picks the recipe, everything else comes from the config.
    out = tmp_path / "lora"
    run = run_script([*MODULE, "--config", "recipes/configs/demo_digits.yaml", "recipe=lora", *TINY_IMAGE,
                      "epochs=1", "max_steps=2", f"output_dir={out}", "progress_bar=false"])
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["recipe"] == "lora" and metrics["parameters"]["trainable_percent"] < 100


def test_a_config_written_for_another_recipe_runs_with_a_recipe_override(tmp_path):
    # The LoRA config with recipe=full: the LoRA options are dropped with a note, everything else carries over.
    out = tmp_path / "full"
    lora_config = "recipes/configs/efficientnet_lite0_hymenoptera_lora.yaml"
    run = run_script(["recipes/finetune.py", "--config", lora_config, "recipe=full", *TINY_IMAGE, "epochs=1",
                      "max_steps=1", f"output_dir={out}", "progress_bar=false"])
    assert run.returncode == 0, run.stderr[-3000:]
    assert "written for recipe 'lora'; recipe=full has no method option(s) ['alpha', 'r', 'train_norms']" in run.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["recipe"] == "full"
    saved = TrainConfig.from_yaml(out / "config.yaml")
    assert saved.optim.lr == 2e-3 and saved.augment == "default"  # the LoRA config's values carried over


def test_module_errors_name_the_setting(tmp_path):
    run = run_script([*MODULE, "--config", "recipes/configs/demo_digits.yaml", "optim.lr=-1",
                      f"output_dir={tmp_path}"])
    assert run.returncode == 2
    assert "python -m hftransfer.recipes: error: optim.lr=-1.0 is invalid" in run.stderr
    assert "Traceback" not in run.stderr


def test_accelerate_launch_of_the_module_on_two_processes(tmp_path):
    out = tmp_path / "ddp"
    run = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
         "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", free_port(),
         *MODULE, "--config", "recipes/configs/demo_digits.yaml", *TINY_IMAGE, "epochs=1",
         "max_steps=2", "batch_size=16", f"output_dir={out}", "progress_bar=false"],
        capture_output=True, text=True, cwd=REPO, env=ENV, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_processes"] == 2 and metrics["recipe"] == "full" and metrics["history"][0]["step"] == 2


def test_cli_predict_on_images_and_its_errors(tmp_path):
    import numpy as np
    from PIL import Image

    model = AutoTransfer.from_pretrained("timm:test_convnext", id2label={0: "cat", 1: "dog", 2: "owl"},
                                         pretrained=False)
    model.save_pretrained(tmp_path / "model")
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.jpg"):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(tmp_path / name)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    cli = ["-m", "hftransfer.cli", "predict", str(tmp_path / "model")]

    run = run_script([*cli, str(tmp_path / "a.png"), str(tmp_path / "b.jpg"), "--top-k", "2",
                      "--precision", "fp32"])  # fp32: the same numbers as model.predict (auto may pick bf16)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(str(tmp_path / "a.png") + "\t")
    expected = model.eval().predict([Image.open(tmp_path / "a.png").convert("RGB")], top_k=2)[0]
    assert lines[0].split("\t")[1] == ", ".join(f"{p['label']} {p['score']:.3f}" for p in expected)

    # A missing input is refused before any work, naming the argument and the file.
    missing = run_script([*cli, str(tmp_path / "a.png"), str(tmp_path / "nope.png")])
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert f"INPUT '{tmp_path / 'nope.png'}' does not exist" in missing.stderr
    # An unreadable image is reported on its own row (naming the file); the other inputs are still predicted.
    broken = run_script([*cli, str(tmp_path / "broken.jpg"), str(tmp_path / "a.png")])
    assert broken.returncode == 0 and "Traceback" not in broken.stderr
    rows = broken.stdout.strip().splitlines()
    assert rows[0].startswith(str(tmp_path / "broken.jpg")) and "cannot read image" in rows[0]
    assert rows[1].startswith(str(tmp_path / "a.png") + "\t") and "ERROR" not in rows[1]
    assert f"({tmp_path / 'broken.jpg'}): cannot read image" in broken.stderr


def test_a_built_wheel_finds_its_example_configs(tmp_path):
    # A wheel install has no recipes/ folder next to it: the configs ship as package data, and the README's
    # `recipes/configs/NAME.yaml` (or just NAME) resolves from any folder.
    source = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "build", "*.egg-info")
    for part in ("hftransfer", "recipes"):
        shutil.copytree(REPO / part, source / part, symlinks=True, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next((tmp_path / "dist").glob("hftransfer-*.whl"))
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                              str(tmp_path / "site"), str(wheel)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    probe = ("import hftransfer; from hftransfer.training import TrainConfig; print(hftransfer.__file__); "
             "print(TrainConfig.from_yaml('recipes/configs/demo_digits.yaml').data.source, "
             "TrainConfig.from_yaml('minilm_sst2_lora').recipe)")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=elsewhere, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    where, resolved = run.stdout.strip().splitlines()
    assert where.startswith(str(tmp_path / "site")) and resolved == "sklearn_digits lora"
    listing = subprocess.run([sys.executable, "-m", "hftransfer.cli", "recipes"], capture_output=True, text=True,
                             cwd=elsewhere, env=env)
    assert listing.returncode == 0, listing.stderr[-3000:]
    for name in example_configs():
        assert name in listing.stdout, name
    assert "python -m hftransfer.recipes --config" in listing.stdout
    assert "accelerate launch -m hftransfer.recipes --config" in listing.stdout
    # The launch command the listing prints runs a shipped example from the wheel, in any folder.
    out = tmp_path / "wheel-run"
    run = subprocess.run([sys.executable, *MODULE, "--config", "demo_digits", *TINY_IMAGE, "epochs=1", "max_steps=1",
                          f"output_dir={out}", "progress_bar=false"], capture_output=True, text=True, cwd=elsewhere,
                         env={**env, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads((out / "metrics.json").read_text())["recipe"] == "full"
