"""Default adapter target modules per backbone family: the layers inside the backbone's numbered blocks."""

from __future__ import annotations

import re
from collections.abc import Callable

from torch import nn

from hftransfer.backbones.architectures import ARCHITECTURES
from hftransfer.backbones.base import BLOCK_PATTERN


def default_target_modules(model: nn.Module, family_key: str,
                           accepts: Callable[[nn.Module], bool] | None = None) -> list[str]:
    """Full names of the modules an adapter should wrap by default.

    The ``lora_targets`` of the family whose ``model_types`` match ``family_key`` (the architecture table,
    ``backbones/architectures.py``) win; otherwise every ``nn.Linear`` inside a numbered block, and where a backbone
    has none (CNNs) every non-grouped ``nn.Conv2d`` inside a numbered block. ``accepts`` (a method's own layer
    constraint) filters every candidate set, so a method that cannot take a layer type falls through to none.
    """
    ok = accepts or (lambda m: True)
    for arch in ARCHITECTURES.values():
        if arch.model_types is None or arch.lora_targets is None:
            continue
        if re.match(arch.model_types, family_key or ""):
            names = [n for n, m in model.named_modules() if re.fullmatch(arch.lora_targets, n)
                     and isinstance(m, (nn.Linear, nn.Conv2d)) and getattr(m, "groups", 1) == 1 and ok(m)]
            if names:
                return names
    in_block = re.compile(BLOCK_PATTERN + r"\.")
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and in_block.search(n) and ok(m)]
    if linears:
        return linears
    return [n for n, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and m.groups == 1 and in_block.search(n) and ok(m)]
