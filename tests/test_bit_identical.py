"""Refactors of the training engine keep its results bit for bit (``bench/bit_identical.py``).

Why this shape: bitwise results depend on the CPU (its vector kernels), the thread count and the library versions, so
hashes recorded on one machine cannot be the expected values on another (CI). The test therefore runs the bench's
``--self-check`` in a child process under ``OMP_NUM_THREADS=1`` and asserts what holds on any machine:

- twins: an interrupted-and-resumed run (full, LoRA, DANN with its target stream) and the same run uninterrupted
  give identical weights and metrics.json (checkpoint, ``TrainState``, RNG, sampler and target-stream resume);
- rerun: a second pass of full / LoRA / prefix tuning / self-training in the same process gives identical bits
  (deterministic, no state leaks from one run into the next: accelerate singletons, RNGs, caches);
- and, on a machine that has a recording in ``bench/results/bit_identical/`` (named by its CPU / library
  fingerprint; the one there was made before the engine was split), every run (full, linear probe with the feature
  cache, LoRA, adapter, prefix tuning, text with class weights + balanced sampling, VPT, DANN, self-training, class
  weights + mixup, unfreeze schedule, resumes, ``evaluate``) matches it exactly. A deliberate change of results
  needs a new recording: ``env OMP_NUM_THREADS=1 python bench/bit_identical.py --record
  bench/results/bit_identical/<name the self-check prints>``.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import REPO, cpu_env


@pytest.mark.integration
def test_engine_results_are_bit_identical_across_resume_reruns_and_the_recording(tmp_path):
    env = cpu_env(HF_HUB_OFFLINE="1", TQDM_DISABLE="1")
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "bit_identical.py"), "--self-check",
                           str(REPO / "bench" / "results" / "bit_identical")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:] + proc.stderr[-4000:]
    assert "twins: 3 pairs compared" in out and "rerun: 4 runs compared" in out, out[-3000:]
    assert "DIFF" not in out and out.strip().endswith("self-check: bit-identical"), out[-3000:]
    for name in ("full", "linear_probe", "lora", "adapter", "prefix_tuning", "vpt", "dann", "self_training",
                 "class_weights_mixup", "resume_full", "resume_dann", "evaluate_image", "evaluate_text"):
        assert f"\n{name} " in f"\n{out}", f"run {name} missing:\n{out[-3000:]}"


LEGACY_STATE = {"epoch": 1, "batches_done": 2, "global_step": 6, "history": [{"epoch": 1, "eval_accuracy": 0.5}],
                "best_metric": 0.5, "best_epoch": 1, "bad_epochs": 0, "loss_sum": 3.25, "loss_count": 2,
                "samples": 32, "train_time": 1.5}


def test_train_state_keeps_the_checkpoint_and_callback_form_of_the_old_state_dict():
    from hftransfer.training import TrainState

    state = TrainState()
    state.load(dict(LEGACY_STATE))  # a checkpoint written before TrainState existed
    assert state.to_dict() == LEGACY_STATE and list(state.to_dict()) == list(LEGACY_STATE)  # same keys, same order
    assert (state["global_step"], state["loss_sum"], state["loss_count"]) == (6, 3.25, 2)  # what callbacks read
    assert "target_stream" not in state.to_dict() and "target_stream" not in state
    state.load({**LEGACY_STATE, "target_stream": {"epoch": 0, "position": 3}})
    assert state.to_dict()["target_stream"] == {"epoch": 0, "position": 3} and "target_stream" in state
    state["loss_sum"] += 1.0
    assert state.loss_sum == 4.25
    state.start_epoch()
    assert (state.loss_sum, state.loss_count, state.samples, state.train_time) == (0.0, 0, 0, 0.0)
    assert state.record_selection(0.7, 2, greater_is_better=True) and (state.best_metric, state.best_epoch) == (0.7, 2)
    assert not state.record_selection(0.6, 3, greater_is_better=True) and state.bad_epochs == 1
    with pytest.raises(KeyError, match="unknown key"):
        state.load({"steps": 1})
    with pytest.raises(KeyError, match="not a TrainState field"):
        state["steps"] = 1
