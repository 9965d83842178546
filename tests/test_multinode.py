"""Two "machines" on one host (two `accelerate launch` processes, machine ranks 0 and 1, gloo on CPU).

Each launcher is its own node with one process, so both processes are *local* main processes of their machine while
sharing one ``output_dir``: only global rank 0 may write the model, metrics and card, and push.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import (
    assert_only_rank0_wrote,
    assert_same_weights,
    cpu_env,
    free_port,
    saved_weights,
    tiny_config,
    train_script,
)


# Runs after the write spy (helpers.train_script) and before training: replaces the hub upload with a recorded call and
# records which local/group rank each process had.
SPY_PREAMBLE = """
    import atexit
    import hftransfer.hub.push

    _pushes = []
    hftransfer.hub.push.push_folder = lambda folder, repo_id, **k: _pushes.append([str(folder), repo_id])
    hftransfer.hub.push.check_push_target = lambda *a, **k: None  # no hub here: the pre-flight would refuse

    @atexit.register
    def _dump():
        report = {"pushes": _pushes, "local_rank": os.environ.get("LOCAL_RANK"),
                  "group_rank": os.environ.get("GROUP_RANK")}
        Path(sys.argv[2], "extra_rank" + os.environ.get("RANK", "0") + ".json").write_text(json.dumps(report))
"""
MULTINODE_SCRIPT = train_script(SPY_PREAMBLE)


def launch_machine(rank: int, port: str, script: Path, config: dict, record_dir: Path) -> subprocess.Popen:
    """One launcher = one machine of ``--num_machines 2``, with one process (the README's two commands)."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "2",
           "--num_processes", "2", "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
           "--main_process_port", port, "--mixed_precision", "no", "--dynamo_backend", "no",
           str(script), json.dumps(config), str(record_dir)]
    env = cpu_env()
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.integration
def test_two_machines_match_one_process_and_only_global_rank0_writes_and_pushes(tmp_path):
    script = tmp_path / "multinode.py"
    script.write_text(MULTINODE_SCRIPT)
    base = {"model.name": "timm:test_convnext", "epochs": 2, "optim.name": "sgd", "optim.lr": 0.05,
            "checkpoint_every_steps": 2, "max_grad_norm": 1.0, "push_to_hub": True, "hub_repo_id": "me/tiny"}
    single = tiny_config(tmp_path / "single", **base)
    nodes = tiny_config(tmp_path / "nodes", **base)
    for name in ("w1", "w2"):
        (tmp_path / name).mkdir()
    env = cpu_env()
    subprocess.run([sys.executable, str(script), json.dumps(single), str(tmp_path / "w1")], check=True, env=env,
                   capture_output=True)
    port = free_port()
    machines = [launch_machine(rank, port, script, nodes, tmp_path / "w2") for rank in (0, 1)]
    try:
        outputs = [m.communicate(timeout=600) for m in machines]
    finally:
        for m in machines:
            if m.poll() is None:
                m.kill()
    for m, (_, err) in zip(machines, outputs):
        assert m.returncode == 0, err[-4000:]

    # Both processes were the local main process of their own machine; only global rank 0 wrote or pushed.
    rank0 = json.loads((tmp_path / "w2" / "extra_rank0.json").read_text())
    rank1 = json.loads((tmp_path / "w2" / "extra_rank1.json").read_text())
    assert rank0["local_rank"] == rank1["local_rank"] == "0"
    assert (rank0["group_rank"], rank1["group_rank"]) == ("0", "1")
    written = assert_only_rank0_wrote(tmp_path / "w2")
    assert rank1["pushes"] == []
    out = Path(nodes["output_dir"])
    assert rank0["pushes"] == [[str(out / "model"), "me/tiny"]]
    for name in ("metrics.json", "config.yaml", "model", "README.md"):
        assert any(Path(p).name == name or f"/{name}" in p for p in written), (name, written)

    # Same optimisation as one process (the criterion of the 2-process test in test_training.py).
    m1 = json.loads((Path(single["output_dir"]) / "metrics.json").read_text())
    m2 = json.loads((out / "metrics.json").read_text())
    assert m2["num_processes"] == 2 and m1["num_processes"] == 1
    for r1, r2 in zip(m1["history"], m2["history"], strict=True):
        assert r1["eval_accuracy"] == pytest.approx(r2["eval_accuracy"], abs=1 / 40 + 1e-9)
        assert r1["train_loss"] == pytest.approx(r2["train_loss"], rel=1e-3)
    assert_same_weights(saved_weights(single["output_dir"]), saved_weights(out), rtol=1e-3, atol=1e-4)
