"""The accelerate presets in recipes/configs/accelerate/ go through accelerate's own launch-time parsing.

Each preset is read the way ``accelerate launch --config_file PRESET`` reads it (``load_config_from_file``, the
launch-command validation, the launcher's environment), and the plugins accelerate then builds from that environment
(FSDP, DeepSpeed) are checked against what hftransfer needs, including the FSDP wrap policy on timm and transformers
backbones.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from hftransfer import AutoTransfer
from hftransfer.backbones import block_class_names
from hftransfer.backbones.base import BLOCK_PATTERN

from helpers import free_port


PRESETS = Path(__file__).resolve().parents[1] / "recipes" / "configs" / "accelerate"
EXPECTED = {"single_gpu": "NO", "multi_gpu": "MULTI_GPU", "multi_node": "MULTI_GPU", "fsdp": "FSDP",
            "deepspeed_zero2": "DEEPSPEED", "deepspeed_zero3": "DEEPSPEED"}


def launch_env(name: str, monkeypatch, *flags: str) -> tuple[object, dict[str, str]]:
    """What ``accelerate launch --config_file <preset> [flags] -m hftransfer.recipes`` resolves, short of starting
    processes: the parsed arguments and the environment the launcher gives the training processes."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import launch as launch_utils

    parser = launch_command_parser()
    args = parser.parse_args(["--config_file", str(PRESETS / f"{name}.yaml"), "--main_process_port", free_port(),
                              *flags, "-m", "hftransfer.recipes", "--config", "recipes/configs/demo_digits.yaml"])
    args, defaults, from_config = _validate_launch_command(args)
    if args.use_deepspeed:
        # As accelerate's launch_command does before starting DeepSpeed.
        fields = list(defaults.deepspeed_config) + (["mixed_precision"] if from_config else [])
        args.deepspeed_fields_from_accelerate_config = ",".join(fields)
        _, env = launch_utils.prepare_deepspeed_cmd_env(args)
    elif args.multi_gpu or args.use_fsdp:
        env = launch_utils.prepare_multi_gpu_env(args)
    else:
        _, env = launch_utils.prepare_simple_launcher_cmd_env(args)
    for key, value in env.items():
        if key.startswith(("ACCELERATE_", "FSDP_")):
            monkeypatch.setenv(key, value)
    return args, env


def test_every_preset_is_listed_and_documents_its_launch_command():
    # One preset per setup, each starting with the command that uses it.
    assert {p.stem for p in PRESETS.glob("*.yaml")} == set(EXPECTED)
    for path in PRESETS.glob("*.yaml"):
        header = path.read_text().split("\ncompute_environment")[0]
        assert f"accelerate launch --config_file recipes/configs/accelerate/{path.name}" in header, path


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_parses_with_accelerates_config_classes(name):
    # accelerate's ClusterConfig refuses unknown keys; the distributed type is the one the name promises.
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(PRESETS / f"{name}.yaml"))
    assert str(config.distributed_type).split(".")[-1] == EXPECTED[name]
    assert config.compute_environment == "LOCAL_MACHINE" and config.mixed_precision == "bf16"


@pytest.mark.parametrize("name", ["single_gpu", "multi_gpu", "multi_node"])
def test_gpu_presets_give_the_launcher_the_right_topology(name, monkeypatch):
    args, env = launch_env(name, monkeypatch, *(["--machine_rank", "1"] if name == "multi_node" else []))
    assert env["ACCELERATE_MIXED_PRECISION"] == "bf16"
    if name == "single_gpu":
        assert not args.multi_gpu and env["CUDA_VISIBLE_DEVICES"] == "0"
    elif name == "multi_gpu":
        assert args.multi_gpu and args.nproc_per_node == "2" and args.num_machines == 1
    else:
        # 16 processes over 2 machines: 8 per machine; --machine_rank on the command line picks this machine.
        assert args.multi_gpu and args.nnodes == "2" and args.nproc_per_node == "8" and args.node_rank == 1
        assert args.rdzv_endpoint == f"10.0.0.1:{args.main_process_port}"


def test_fsdp_preset_builds_a_full_shard_plugin_that_wraps_the_backbone_blocks(monkeypatch, tiny_models):
    # FSDP2, resharded after forward (full shard), whole-model state dict, and a transformer wrap policy with no class
    # list: accelerate takes the model's _no_split_modules, which hftransfer fills with the backbone's block classes.
    from accelerate.utils import FullyShardedDataParallelPlugin
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    args, env = launch_env("fsdp", monkeypatch)
    assert args.use_fsdp and env["FSDP_VERSION"] == "2"
    for name, blocks in [("timm:test_vit", {"Block"}), ("timm:test_convnext", {"ConvNeXtStage", "ConvNeXtBlock"}),
                         (tiny_models["transformers_bert"], {"BertLayer"}),
                         (tiny_models["transformers_vit"], {"ViTLayer"})]:
        plugin = FullyShardedDataParallelPlugin()
        assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
        assert str(plugin.state_dict_type).endswith("FULL_STATE_DICT")
        assert type(plugin.cpu_offload).__name__ == "OffloadPolicy"  # no CPUOffloadPolicy: parameters stay on GPU
        model = AutoTransfer.from_pretrained(name, num_labels=2, pretrained=False, method="lora")
        assert set(model._no_split_modules) == blocks, name
        plugin.set_auto_wrap_policy(model)
        wrapped = plugin.auto_wrap_policy.keywords["transformer_layer_cls"]
        assert plugin.auto_wrap_policy.func is transformer_auto_wrap_policy
        assert {cls.__name__ for cls in wrapped} == blocks
        # Every numbered block of the backbone is one FSDP unit (the head and embeddings stay with the root).
        units = [n for n, m in model.named_modules() if isinstance(m, tuple(wrapped))]
        assert units and all(re.search(BLOCK_PATTERN, n) for n in units), units


def test_block_class_names_look_through_plain_containers():
    # EfficientNet's blocks.N are nn.Sequential stages: their children are the blocks (never "Sequential").
    model = AutoTransfer.from_pretrained("timm:efficientnet_lite0", num_labels=2, pretrained=False)
    assert block_class_names(model.backbone) == ["DepthwiseSeparableConv", "InvertedResidual"]
    assert block_class_names(model.head) == []


@pytest.mark.integration  # needs the DeepSpeed extra, installed for the second tier (make test-integration)
@pytest.mark.parametrize(("name", "stage"), [("deepspeed_zero2", 2), ("deepspeed_zero3", 3)])
def test_deepspeed_presets_build_the_zero_plugin(name, stage, monkeypatch):
    # The DeepSpeed plugin accelerate builds from the preset: the ZeRO stage, no offload, ZeRO-3 gathering 16-bit
    # weights on save (what Accelerator.get_state_dict needs), and batch size / clipping left "auto" for the engine.
    pytest.importorskip("deepspeed", reason="DeepSpeed is the optional extra hftransfer[deepspeed]")
    from accelerate.utils import DeepSpeedPlugin

    args, env = launch_env(name, monkeypatch)
    assert args.use_deepspeed and env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == str(stage)
    plugin = DeepSpeedPlugin()
    zero = plugin.deepspeed_config["zero_optimization"]
    assert zero["stage"] == stage
    assert zero["offload_optimizer"]["device"] == "none" and zero["offload_param"]["device"] == "none"
    assert plugin.deepspeed_config["train_micro_batch_size_per_gpu"] == "auto"
    assert plugin.deepspeed_config["gradient_clipping"] == "auto"
    if stage == 3:
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True
    # The engine fills the "auto" values from the recipe config (its loaders have no batch_size attribute, and
    # DeepSpeed clips gradients itself) and gathers the weights on save only where ZeRO shards them (stage 3).
    from accelerate.utils import DistributedType

    from hftransfer.training.sharding import fill_deepspeed_auto, sharding_kind, shards_parameters

    accelerator = SimpleNamespace(distributed_type=DistributedType.DEEPSPEED, num_processes=2,
                                  state=SimpleNamespace(deepspeed_plugin=plugin))
    assert sharding_kind(accelerator) == f"zero{stage}" and shards_parameters(accelerator) is (stage == 3)
    assert fill_deepspeed_auto(accelerator, batch_size=32, max_grad_norm=None) == {
        "train_micro_batch_size_per_gpu": 16, "gradient_clipping": 0.0}
    assert plugin.deepspeed_config["train_micro_batch_size_per_gpu"] == 16
    assert fill_deepspeed_auto(accelerator, batch_size=32, max_grad_norm=1.0) == {}  # already set: left alone
