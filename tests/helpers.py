"""Shared test scaffolding: config builders, data writers, process launchers. Test modules import from here,
never from each other."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np


REPO = Path(__file__).resolve().parents[1]


def tiny_config(tmp_path: Path, **overrides) -> dict:
    """The project's one training-config builder: a 2-epoch run of a tiny random timm CNN on 64 scikit-learn digits;
    ``overrides`` are dotted keys (``**{"model.name": ...}``)."""
    config = {
        "recipe": "full",
        "model": {"name": "timm:test_convnext", "pretrained": False, "image_size": 32},
        "data": {"source": "sklearn_digits", "max_train_samples": 64, "max_eval_samples": 40},
        "optim": {"lr": 3e-3},
        "epochs": 2,
        "batch_size": 16,
        "augment": "none",
        "output_dir": str(tmp_path / "run"),
        "progress_bar": False,
    }
    return with_overrides(config, overrides)


def digit_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8), digits.target


def target_files(root: Path) -> dict[str, str]:
    """A shifted target domain: inverted digits (unlabelled) and a labelled evaluation part."""
    x, y = digit_arrays()
    root.mkdir(parents=True, exist_ok=True)
    np.savez(root / "target.npz", x=255 - x[:400])
    np.savez(root / "target_eval.npz", x=255 - x[400:520], y=y[400:520])
    return {"target": str(root / "target.npz"), "target_eval": str(root / "target_eval.npz")}


def da_config(tmp_path: Path, objective: str | dict, **overrides) -> dict:
    """``tiny_config`` with a shifted target domain (inverted digits) and ``objective``."""
    files = target_files(tmp_path / "domains")
    config = tiny_config(tmp_path, **{"target": {"source": files["target"]},
                                      "target_eval": {"source": files["target_eval"]},
                                      "objective": objective if isinstance(objective, dict) else {"name": objective}})
    return with_overrides(config, overrides)


def with_overrides(config: dict, overrides: dict) -> dict:
    """``config`` with dotted keys set in place (``{"model.name": ...}`` sets ``config["model"]["name"]``)."""
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return config


def text_csv(tmp_path: Path, n: int = 48) -> Path:
    words_pos = ["good", "great", "fun"]
    words_neg = ["bad", "awful", "dull"]
    rows = ["text,label"]
    for i in range(n):
        pos = i % 2 == 0
        word = (words_pos if pos else words_neg)[i % 3]
        rows.append(f"the movie was very {word},{'positive' if pos else 'negative'}")
    path = tmp_path / "reviews.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def free_port() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


# --- child processes: training scripts, the write spy, accelerate launch, kill and resume ---------------------------

TESTS_DIR = Path(__file__).resolve().parent


def train_script(preamble: str = "") -> str:
    """A script ``python script.py CONFIG_JSON RECORD_DIR [args...]`` that records every file this process writes
    under the run's parent folder (``write_spy``; to ``RECORD_DIR/writes_rank<RANK>.json``), runs ``preamble``, then
    ``hftransfer.train(config)``."""
    return textwrap.dedent(f"""
        import json, os, sys
        from pathlib import Path
        sys.path.insert(0, {str(TESTS_DIR)!r})
        import write_spy
        _config = json.loads(sys.argv[1])
        write_spy.install(Path(_config["output_dir"]).resolve().parent,
                          Path(sys.argv[2], "writes_rank" + os.environ.get("RANK", "0") + ".json"))
    """) + textwrap.dedent(preamble) + textwrap.dedent("""
        import hftransfer
        hftransfer.train(_config)
    """)


def cpu_env(**extra: str) -> dict[str, str]:
    """Child-process environment: gloo on CPU everywhere (also on a GPU machine), one thread per process."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", **extra}


def launch_command(script: Path, *args: str, processes: int = 2,
                   launcher: tuple[str, ...] = ("--multi_gpu",)) -> list[str]:
    """The ``accelerate launch`` command line of ``script`` on ``processes`` processes (no mixed precision)."""
    return [sys.executable, "-m", "accelerate.commands.launch", *launcher, "--num_processes", str(processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", free_port(), str(script), *args]


def accelerate_launch(script: Path, *args: str, processes: int = 2, launcher: tuple[str, ...] = ("--multi_gpu",),
                      env: dict[str, str] | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """``accelerate launch`` of ``script`` on ``processes`` CPU processes (gloo); asserts it succeeded."""
    cmd = launch_command(script, *args, processes=processes, launcher=launcher)
    launched = subprocess.run(cmd, env=env or cpu_env(), capture_output=True, text=True, timeout=timeout)
    assert launched.returncode == 0, launched.stderr[-4000:]
    return launched


def recorded_writes(record_dir: Path, rank: int) -> list[str]:
    return json.loads((Path(record_dir) / f"writes_rank{rank}.json").read_text())


def assert_only_rank0_wrote(record_dir: Path, world_size: int = 2) -> list[str]:
    """Every rank but 0 wrote nothing under the run folder; returns rank 0's writes (never empty)."""
    for rank in range(1, world_size):
        assert recorded_writes(record_dir, rank) == [], f"rank {rank} wrote files"
    written = recorded_writes(record_dir, 0)
    assert written, "rank 0 wrote nothing: the spy saw no write"
    return written


def saved_weights(output_dir: str | Path) -> dict:
    """The tensors of a run's saved model (full weights, or the trained weights of an adapter-only folder)."""
    from safetensors.torch import load_file

    from hftransfer.saved_format import FULL_WEIGHTS, TRAINED_WEIGHTS

    model_dir = Path(output_dir) / "model"
    found = [model_dir / name for name in (FULL_WEIGHTS, TRAINED_WEIGHTS) if (model_dir / name).is_file()]
    assert found, f"no saved weights in {model_dir}"
    return load_file(found[0])


def assert_same_weights(a: dict, b: dict, atol: float = 0.0, rtol: float = 0.0) -> None:
    import torch

    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=rtol, atol=atol, msg=lambda m, k=key: f"{k}: {m}")


def launch_single_and_two_process(tmp_path: Path, single: dict, double: dict, extra_env: dict[str, str] | None = None,
                                  preamble: str = "") -> tuple[dict, dict, dict, dict]:
    """Train ``single`` in one process and ``double`` (same config, another output_dir) under ``accelerate launch
    --multi_gpu --num_processes 2`` (gloo on CPU), both under the write spy. Checks only rank 0 wrote files; returns
    both runs' metrics.json and saved weights: (m1, m2, w1, w2)."""
    script = tmp_path / "ddp.py"
    script.write_text(train_script(preamble))
    (tmp_path / "w1").mkdir()
    (tmp_path / "w2").mkdir()
    env = cpu_env(**(extra_env or {}))
    subprocess.run([sys.executable, str(script), json.dumps(single), str(tmp_path / "w1")], check=True, env=env,
                   capture_output=True)
    accelerate_launch(script, json.dumps(double), str(tmp_path / "w2"), env=env)
    written = {Path(p).name for p in assert_only_rank0_wrote(tmp_path / "w2")}
    assert {"metrics.json", "config.yaml", "hftransfer_config.json"} <= written, written  # Path.write_text routes
    m1 = json.loads((Path(single["output_dir"]) / "metrics.json").read_text())
    m2 = json.loads((Path(double["output_dir"]) / "metrics.json").read_text())
    assert m2["num_processes"] == 2 and m1["num_processes"] == 1
    return m1, m2, saved_weights(single["output_dir"]), saved_weights(double["output_dir"])


RESUME_SCRIPT = textwrap.dedent("""
    import os, signal, sys, json
    import hftransfer
    from hftransfer.training import Callback

    class KillAt(Callback):
        def __init__(self, step):
            self.step = step
        def on_step_end(self, trainer, state):
            if state["global_step"] == self.step:
                os.kill(os.getpid(), signal.SIGKILL)

    config = json.loads(sys.argv[1])
    kill = int(sys.argv[2])
    hftransfer.train(config, callbacks=[KillAt(kill)] if kill else [])
""")


def run_killed_and_resumed(tmp_path: Path, clean: dict, killed: dict, kill_step: int, last_checkpoint: int,
                           env: dict[str, str] | None = None, after_kill=None, launcher: tuple[str, ...] | None = None,
                           preamble: str = "") -> tuple[Path, Path]:
    """Train ``clean`` uninterrupted; train ``killed`` (same options, another output_dir) until SIGKILL after optimizer
    step ``kill_step``, check its newest checkpoint is step ``last_checkpoint`` (``after_kill(path)`` may inspect it),
    then run it again to resume. Returns both output folders (the caller compares weights and metrics).

    ``launcher``: run all three under ``accelerate launch`` with these options (:func:`launch_command`, 2 processes;
    every process kills itself); ``preamble`` runs first in the script."""
    script = tmp_path / "resume.py"
    script.write_text(textwrap.dedent(preamble) + RESUME_SCRIPT)
    env = {**os.environ, "PYTHONHASHSEED": "0", **(env or {})}
    out = Path(killed["output_dir"])

    def run(config: dict, kill: int) -> subprocess.CompletedProcess:
        args = (json.dumps(config), str(kill))
        cmd = [sys.executable, str(script), *args] if launcher is None else launch_command(script, *args,
                                                                                           launcher=launcher)
        return subprocess.run(cmd, env=env, capture_output=True, text=True)

    done = run(clean, 0)
    assert done.returncode == 0, done.stderr[-3000:]
    first = run(killed, kill_step)
    if launcher is None:
        assert first.returncode == -9, first.stderr[-3000:]
    else:  # the launcher reports its processes' deaths and fails
        assert first.returncode != 0 and "SIGKILL" in first.stderr, first.stderr[-3000:]
    last = max((out / "checkpoints").iterdir(), key=lambda p: p.name)
    assert last.name == f"step_{last_checkpoint:08d}"
    assert not (out / "metrics.json").exists()
    if after_kill is not None:
        after_kill(last)
    second = run(killed, 0)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from" in (out / "train.log").read_text()
    return Path(clean["output_dir"]), out


# --- the local hub server: one per test session (fixture `hub` in conftest.py), driven by huggingface_hub -----------

# Not shaped like "hf_...", so the card's secret redaction could not hide a leak from the token grep.
HUB_TOKEN = "tok-" + "7c1e9a2b4d6f" * 3
HUB_BASES = {"timm": "tester/tiny-vit", "bert": "tester/tiny-bert"}  # seeded base backbones
SUBPROCESS_LOGS: list[str] = []  # stdout + stderr of every run_py child (grepped for the token)

PY_PRELUDE = """
import json, logging, os, sys
from pathlib import Path

import numpy as np

logging.basicConfig(level=logging.INFO, stream=sys.stderr)

def error_of(fn, *args, **kwargs):
    '''Class names (MRO) and message of the exception fn raises; None if it returns.'''
    try:
        fn(*args, **kwargs)
    except Exception as err:
        return {"types": [cls.__name__ for cls in type(err).__mro__], "message": str(err)}
    return None
"""


def run_py(code: str, env: dict[str, str], timeout: float = 300):
    """Run ``code`` (after :data:`PY_PRELUDE`) in a fresh interpreter; return the JSON of its last stdout line."""
    proc = subprocess.run([sys.executable, "-c", PY_PRELUDE + textwrap.dedent(code)], env=env, capture_output=True,
                          text=True, timeout=timeout)
    SUBPROCESS_LOGS.append(proc.stdout + proc.stderr)
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- test matrices: a covering slice in the quick tier, the full product in the second tier -------------------------

def tiered(pairs: list[tuple[str, str]]) -> list:
    """``(method, family)`` pairs as pytest params: a diagonal cover — every method and every family at least once —
    runs in the quick tier; every other pair is marked ``integration`` (second tier). The full matrix runs in CI."""
    import pytest

    methods = list(dict.fromkeys(m for m, _ in pairs))
    families = list(dict.fromkeys(f for _, f in pairs))
    quick: set[tuple[str, str]] = set()
    for i, method in enumerate(methods):  # each method on the next family in turn (one it supports)
        options = [f for f in families[i % len(families):] + families[:i % len(families)] if (method, f) in pairs]
        quick.add((method, options[0]))
    for family in families:  # families no method landed on
        if not any(f == family for _, f in quick):
            quick.add(next(p for p in pairs if p[1] == family))
    return [pytest.param(*p, id=f"{p[0]}-{p[1]}") if p in quick else
            pytest.param(*p, id=f"{p[0]}-{p[1]}", marks=pytest.mark.integration) for p in pairs]
