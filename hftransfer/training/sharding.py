"""What the engine does differently when accelerate shards the model or optimizer state (FSDP, DeepSpeed ZeRO).

Under FSDP and ZeRO-3 no process holds the whole model: saving gathers the full state dict on the main process
first (then trained-parameter-only methods such as LoRA filter it as usual), and loading the best model back scatters
a full state dict into the shards. BatchNorm statistics, which no process shares there, are averaged before each
evaluation and each checkpoint. DeepSpeed's ``auto`` batch size and gradient clipping come from the recipe config.
"""

from __future__ import annotations

from typing import Any

import torch
from accelerate.utils import DistributedType
from torch import nn


def sharding_kind(accelerator) -> str | None:
    """``"fsdp"``, ``"zero1"``/``"zero2"``/``"zero3"`` when state is split across processes; ``None`` otherwise."""
    if accelerator.distributed_type == DistributedType.FSDP:
        return "fsdp"
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        stage = accelerator.state.deepspeed_plugin.deepspeed_config.get("zero_optimization", {}).get("stage", 0)
        return f"zero{int(stage)}"
    return None


def shards_parameters(accelerator) -> bool:
    """FSDP or ZeRO-3: every process holds only a slice of the weights."""
    return sharding_kind(accelerator) in ("fsdp", "zero3")


def gathered_state_dict(accelerator, model: nn.Module) -> dict[str, torch.Tensor] | None:
    """The full state dict of a sharded prepared ``model`` on the main process (empty elsewhere); ``None`` when the
    weights are not sharded (the unwrapped model's own ``state_dict()`` is complete).

    A collective: every process must call it.
    """
    if not shards_parameters(accelerator):
        return None
    return accelerator.get_state_dict(model)


def load_full_state_dict(accelerator, model: nn.Module, state: dict[str, torch.Tensor], strict: bool) -> None:
    """Load a full (unsharded) ``state`` into the prepared ``model``; every process calls it with the same ``state``.

    ``strict=False`` for trained-parameter-only files (LoRA + head): the other weights keep their values.
    """
    kind = sharding_kind(accelerator)
    if kind == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict  # heavy: FSDP only
        from torch.distributed.fsdp import FSDPModule  # heavy: torch.distributed.fsdp, FSDP only

        # After a forward pass the root keeps its parameters gathered; loading needs every parameter as its shard.
        for module in model.modules():
            if isinstance(module, FSDPModule):
                module.reshard()
        set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=strict))
    elif kind == "zero3":
        import deepspeed  # optional dependency

        unwrapped = accelerator.unwrap_model(model)
        with deepspeed.zero.GatheredParameters(list(unwrapped.parameters()), modifier_rank=0):
            if accelerator.is_main_process:
                unwrapped.load_state_dict(state, strict=strict)
    else:
        accelerator.unwrap_model(model).load_state_dict(state, strict=strict)


def average_batchnorm_statistics(accelerator, model: nn.Module) -> int:
    """Average the BatchNorm running statistics over the processes of an FSDP or DeepSpeed run; returns how many
    tensors were averaged (0 elsewhere).

    Each process normalises its own slice of every batch, so its running statistics drift from the others'. DDP
    copies rank 0's into every process at each forward; FSDP and DeepSpeed never do, so without this each process
    would evaluate its slice of the validation split with different statistics and the saved model (rank 0's) would
    not be the one scored. The mean is what timm's ``distribute_bn(reduce=True)`` uses. A collective: every process
    calls it before evaluating.
    """
    if sharding_kind(accelerator) is None or accelerator.num_processes < 2:
        return 0
    stats = [buffer for module in model.modules()
             if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats
             for buffer in (module.running_mean, module.running_var) if buffer is not None]
    for buffer in stats:  # gloo has no AVG reduction: sum, then divide
        torch.distributed.all_reduce(buffer, op=torch.distributed.ReduceOp.SUM)
        buffer.div_(accelerator.num_processes)
    return len(stats)


def fill_deepspeed_auto(accelerator, batch_size: int, max_grad_norm: float | None) -> dict[str, Any]:
    """Fill DeepSpeed's ``auto`` micro batch and clipping from the recipe config before ``prepare``.

    hftransfer's loaders use a batch sampler (no ``batch_size`` attribute for accelerate to read), and DeepSpeed clips
    gradients itself, so ``max_grad_norm`` must reach its config. Returns the values set (empty without DeepSpeed).
    """
    if sharding_kind(accelerator) not in ("zero0", "zero1", "zero2", "zero3"):
        return {}
    config = accelerator.state.deepspeed_plugin.deepspeed_config
    filled: dict[str, Any] = {}
    if config.get("train_micro_batch_size_per_gpu", "auto") == "auto":
        filled["train_micro_batch_size_per_gpu"] = batch_size // accelerator.num_processes
    if config.get("gradient_clipping", "auto") == "auto":
        filled["gradient_clipping"] = float(max_grad_norm or 0.0)
    config.update(filled)
    return filled


def full_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with every DTensor (an FSDP shard) gathered into the whole tensor. A collective when ``state`` holds
    DTensors: every process calls it with the same keys."""
    from torch.distributed.tensor import DTensor  # heavy: torch.distributed.tensor, FSDP only

    return {k: v.full_tensor() if isinstance(v, DTensor) else v for k, v in state.items()}


def shaped_like(saved: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    """A whole ``saved`` tensor ready to load where ``current`` is: sharded like it when it is a DTensor (a
    collective), else on its device."""
    from torch.distributed.tensor import DTensor, distribute_tensor  # heavy: torch.distributed.tensor, FSDP only

    if isinstance(current, DTensor):
        return distribute_tensor(saved.to(current.device), current.device_mesh, current.placements)
    return saved.to(current.device)
