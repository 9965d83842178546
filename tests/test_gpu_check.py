"""bench/gpu_check.sh: a clean stop without a GPU, and its throughput summary of real (tiny, CPU) runs."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import hftransfer

from helpers import tiny_config


REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "gpu_check.sh"


@pytest.mark.integration
@pytest.mark.parametrize(("strict", "code"), [("0", 0), ("1", 3)])
def test_gpu_check_without_a_gpu_says_so_and_stops(strict, code):
    # With no visible CUDA device the script prints why and exits at once (0, or 3 with GPU_CHECK_STRICT=1) without
    # creating a result folder. CUDA_VISIBLE_DEVICES="" hides GPUs, so this also holds on a GPU machine.
    results = REPO / "bench" / "results" / "gpu_check"
    before = sorted(results.iterdir()) if results.is_dir() else []
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable, "GPU_CHECK_STRICT": strict}
    run = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == code, run.stderr
    assert "no CUDA GPU visible" in run.stdout and "nothing to check" in run.stdout
    assert (sorted(results.iterdir()) if results.is_dir() else []) == before


@pytest.mark.integration
def test_gpu_check_report_summarises_real_runs(tmp_path):
    # The report reads each run's metrics.json: steps, time-weighted samples/s over the epochs, final accuracy.
    spec = importlib.util.spec_from_file_location("gpu_check_report", REPO / "bench" / "gpu_check_report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    folder = tmp_path / "check"
    result = hftransfer.train(tiny_config(tmp_path, epochs=2, output_dir=str(folder / "runs" / "tiny_full_no")))
    (folder / "machine.txt").write_text("GPU 0: none (test)\n")
    assert report.main([str(folder), "--failed", "minilm_sst2_lora_fp16"]) == 0
    summary = json.loads((folder / "summary.json").read_text())
    row = summary["runs"]["tiny_full_no"]
    history = result.history
    seconds = sum(h["train_time_s"] for h in history)
    expected = sum(h["train_samples_per_s"] * h["train_time_s"] for h in history) / seconds
    assert row["train_samples_per_s"] == pytest.approx(expected, abs=0.05)
    assert row["steps"] == 8 and row["epochs"] == 2 and row["num_processes"] == 1
    assert row["accuracy"] == result.final_metrics["accuracy"]
    assert summary["failed"] == ["minilm_sst2_lora_fp16"]
    text = (folder / "summary.md").read_text()
    assert "| tiny_full_no | full |" in text and "GPU 0: none (test)" in text and "minilm_sst2_lora_fp16" in text
