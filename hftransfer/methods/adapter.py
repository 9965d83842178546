"""``adapter``: bottleneck adapters (Houlsby / Pfeiffer / parallel) on transformers, residual 1x1-conv ones on CNNs.

Our own code (PEFT has no bottleneck adapter). An adapter is ``up(act(down(x)))`` with ``up`` initialised to zero,
added to an existing branch, so training starts from the pretrained function. Adapters are inserted with forward
hooks on submodules found by the architecture table (``backbones/architectures.py``: each family's ``blocks`` with
``attn_out`` / ``mlp_out`` / ``mlp_in``, or its ``cnn_blocks``; no model code is patched); each adapter module is
attached as a child named :data:`ADAPTER_ATTR` of the module it hooks, so parameter names of the backbone stay
unchanged and the adapter's own names are ``<module>.hft_adapter.<...>``.

Placements (transformer blocks):
    - ``houlsby``: after the attention output projection and after the MLP (Houlsby et al., 2019);
    - ``pfeiffer``: after the MLP only (Pfeiffer et al., 2021);
    - ``parallel``: beside the MLP, fed with the MLP's input (He et al., 2022).
CNN blocks (timm ResNet / EfficientNet / ConvNeXt...): a residual 1x1-conv bottleneck after every block (Rebuffi et
al., 2017, "residual adapters").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from hftransfer.backbones.architectures import cnn_block_pattern, transformer_block_families
from hftransfer.errors import ConfigurationError
from hftransfer.methods.base import HeadWarmup, TransferMethod
from hftransfer.methods.head_probe import HeadProbeConfig
from hftransfer.methods.peft_base import is_norm_param
from hftransfer.methods.registry import register_method, working_methods
from hftransfer.saved_format import HEAD_PREFIX


if TYPE_CHECKING:
    from hftransfer.modeling import AutoTransfer

ADAPTER_ATTR = "hft_adapter"
PLACEMENTS = ("houlsby", "pfeiffer", "parallel")
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


SUPPORTED = ("transformer blocks of timm ViTs, transformers ViT/DeiT and BERT/RoBERTa/ELECTRA/DistilBERT (bottleneck "
             "adapters, placements houlsby/pfeiffer/parallel) and CNN blocks of timm ResNet/EfficientNet/ConvNeXt "
             "families, packaged:efficientnet_lite0 included (residual 1x1-conv adapters)")


@dataclass
class AdapterConfig(HeadProbeConfig):
    placement: str = field(default="houlsby", metadata={
        "help": "Transformers: 'houlsby' (after attention and MLP), 'pfeiffer' (after the MLP) or 'parallel' (beside "
                "the MLP). CNNs always get one residual conv adapter after each block."})
    reduction_factor: int = field(default=4, metadata={
        "help": "Bottleneck width = channels // reduction_factor (at least 1): 96 on MiniLM's 384 channels."})
    non_linearity: str = field(default="relu", metadata={"help": f"One of {sorted(ACTIVATIONS)}."})
    dropout: float = field(default=0.0, metadata={"help": "Dropout on the adapter's bottleneck."})
    scaling: float = field(default=1.0, metadata={"help": "Multiplier of the adapter's output."})
    train_norms: bool = field(default=False, metadata={"help": "Also train the backbone's norm layers."})

    def __post_init__(self):
        if self.placement not in PLACEMENTS:
            raise ConfigurationError(f"adapter placement={self.placement!r} is not one of {list(PLACEMENTS)}.")
        if not isinstance(self.reduction_factor, int) or self.reduction_factor < 1:
            raise ConfigurationError(f"adapter reduction_factor must be a positive integer; received "
                             f"{self.reduction_factor!r}.")
        if self.non_linearity not in ACTIVATIONS:
            raise ConfigurationError(f"adapter non_linearity={self.non_linearity!r} is not one of "
                                     f"{sorted(ACTIVATIONS)}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigurationError(f"adapter dropout must be in [0, 1); received dropout={self.dropout}.")
        super().__post_init__()


class Bottleneck(nn.Module):
    """``scaling * up(dropout(act(down(x))))`` with ``up`` zero-initialised: Linear on tokens, 1x1 conv on maps."""

    def __init__(self, channels: int, config: AdapterConfig, conv: bool = False):
        super().__init__()
        hidden = max(1, channels // config.reduction_factor)
        layer = (lambda i, o: nn.Conv2d(i, o, 1)) if conv else nn.Linear
        self.down = layer(channels, hidden)
        self.act = ACTIVATIONS[config.non_linearity]()
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.up = layer(hidden, channels)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.scaling = config.scaling
        self._parallel_input: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.dropout(self.act(self.down(x)))) * self.scaling

    def capture(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        """Forward pre-hook on the MLP (parallel placement): keep its input for the hook on the MLP's output.

        A bound method (not a closure), so ``copy.deepcopy`` of the model points the hook at the copied adapter.
        """
        self._parallel_input = args[0] if args else next(iter(kwargs.values()))


def _add_to_output(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    adapter = getattr(module, ADAPTER_ATTR)
    return output + adapter(output).to(output.dtype)


def _add_parallel(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    adapter = getattr(module, ADAPTER_ATTR)
    x, adapter._parallel_input = adapter._parallel_input, None
    if x is None:
        raise RuntimeError("parallel adapter: the MLP input was not captured before the MLP output (hook order).")
    return output + adapter(x).to(output.dtype)


def _linear_out(module: nn.Module) -> int:
    if not isinstance(module, nn.Linear):
        raise ConfigurationError(f"adapter expected an nn.Linear, found {type(module).__name__}.")
    return module.out_features


def _last_conv_channels(block: nn.Module) -> int | None:
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels if convs else None


@dataclass(frozen=True)
class AdapterSite:
    """One adapter: the module whose output it changes, its width, and (parallel) where its input comes from."""

    module: str
    channels: int
    conv: bool = False
    input_from: str | None = None


def find_sites(root: nn.Module, placement: str) -> tuple[str, list[AdapterSite]]:
    """The family that matches ``root`` and the adapter sites it gives; ``("", [])`` when none matches.

    Transformer-block families of the architecture table are tried in order (the first that finds blocks wins), then
    the CNN blocks of every family.
    """
    modules = dict(root.named_modules())
    for rule in transformer_block_families():
        blocks = [n for n in modules if re.fullmatch(rule.blocks, n)
                  and all(f"{n}.{p}" in modules for p in (rule.attn_out, rule.mlp_out, rule.mlp_in))]
        if not blocks:
            continue
        sites = []
        for block in blocks:
            mlp_out = f"{block}.{rule.mlp_out}"
            width = _linear_out(modules[mlp_out])
            if placement == "houlsby":
                attn_out = f"{block}.{rule.attn_out}"
                sites.append(AdapterSite(attn_out, _linear_out(modules[attn_out])))
            if placement == "parallel":
                sites.append(AdapterSite(mlp_out, width, input_from=f"{block}.{rule.mlp_in}"))
            else:
                sites.append(AdapterSite(mlp_out, width))
        return rule.name, sites
    blocks = [n for n in modules if re.fullmatch(cnn_block_pattern(), n)]
    sites = [AdapterSite(n, c, conv=True) for n in blocks if (c := _last_conv_channels(modules[n]))]
    return ("CNN blocks (residual conv adapters)", sites) if sites else ("", [])


# Reduction 4 on every backbone (SST-2 train, bench/peft_defaults.py: reduction 16 -1.85 points). lr 3e-3 on images
# (1,000 held-back CIFAR-10 train images: lr 1e-3 -2.3 points; CIFAR-10 test +2.8, one seed); lr 1e-3 on text: on
# SST-2's whole train set (65k sentences, 4,000 steps) it beat 3e-3 by 2.3 points on the held-back tune split,
# although 3e-3 led by 0.4 on a 10k-sentence subset. CNN blocks are narrow (16-320 channels in EfficientNet-Lite0).
@register_method("adapter", AdapterConfig,
                 defaults={"optim": {"name": "adamw", "lr": 3e-3, "weight_decay": 0.01},
                           "scheduler": {"warmup_ratio": 0.05}},
                 family_defaults={"text": {"optim": {"lr": 1e-3}}},
                 example_model="packaged:efficientnet_lite0")
class Adapter(TransferMethod):
    """Bottleneck adapters (Houlsby/Pfeiffer/parallel) on transformer blocks, residual conv adapters on CNN blocks."""

    supported_backbones = SUPPORTED
    saves_full_weights = False
    config: AdapterConfig

    def head_warmup(self) -> HeadWarmup | None:
        return self.config.head_warmup()

    def check_backbone(self, model: AutoTransfer) -> None:
        _, sites = find_sites(model.backbone.base_model(), self.config.placement)
        if sites:
            return

        raise ConfigurationError(
            f"method 'adapter' cannot act on backbone {model.backbone.spec.name!r}: no block matches its rule table "
            f"(hftransfer/backbones/architectures.py). It supports {SUPPORTED}. Methods that work on this backbone: "
            f"{', '.join(working_methods(model, exclude=self.name)) or 'full, linear_probe'}."
        )

    def apply(self, model: AutoTransfer) -> None:
        root = model.backbone.base_model()
        _, sites = find_sites(root, self.config.placement)
        modules = dict(root.named_modules())
        self._handles = []
        for site in sites:
            target = modules[site.module]
            if hasattr(target, ADAPTER_ATTR):
                raise ConfigurationError(f"{site.module} already holds an adapter; apply the method once.")
            adapter = Bottleneck(site.channels, self.config, conv=site.conv)
            ref = next(target.parameters(), None)
            if ref is not None:
                adapter.to(device=ref.device, dtype=ref.dtype)
            target.add_module(ADAPTER_ATTR, adapter)
            if site.input_from is None:
                self._handles.append(target.register_forward_hook(_add_to_output))
            else:
                self._handles.append(modules[site.input_from].register_forward_pre_hook(adapter.capture,
                                                                                       with_kwargs=True))
                self._handles.append(target.register_forward_hook(_add_parallel))
        self.set_trainable(model)

    def is_trained_parameter(self, name: str) -> bool:
        if name.startswith(HEAD_PREFIX) or f".{ADAPTER_ATTR}." in name:
            return True
        return self.config.train_norms and is_norm_param(name)

    def merge(self, model: AutoTransfer) -> bool:
        raise ConfigurationError(
            "method 'adapter' cannot be merged into the backbone weights: a bottleneck adapter is nonlinear "
            "(up(act(down(x)))), so no single weight matrix equals it. Keep the adapters (save or push without "
            "merge; full_weights=True gives a standalone copy), or train with lora/loha/lokr/ia3/oft/boft, which "
            "merge."
        )
