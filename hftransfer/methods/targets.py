"""Default adapter target modules per backbone family: the layers inside the backbone's numbered blocks."""

from __future__ import annotations

import re
from collections.abc import Callable

from torch import nn

from hftransfer.backbones.base import BLOCK_PATTERN


# Architecture-specific overrides (regex on the timm architecture / transformers model_type -> module name regex).
TARGET_OVERRIDES: dict[str, str] = {
    # BERT-family: attention projections and the MLP (matches peft's LoRA defaults plus the feed-forward).
    r"^(bert|roberta|distilbert|electra|xlm-roberta|deberta.*|mpnet|albert)$":
        r".*\.(query|key|value|q_lin|k_lin|v_lin|dense|out_lin|lin1|lin2|query_proj|key_proj|value_proj)$",
    # EfficientNet / MobileNet: pointwise convs (depthwise convs have groups>1 and stay frozen).
    r"^(efficientnet|tf_efficientnet|mobilenet|mnasnet|fbnet|tinynet|test_efficientnet).*":
        r".*blocks\.\d+\.\d+\.(conv_pw|conv_pwl)$",
}


def default_target_modules(model: nn.Module, family_key: str,
                           accepts: Callable[[nn.Module], bool] | None = None) -> list[str]:
    """Full names of the modules an adapter should wrap by default.

    An override for ``family_key`` wins; otherwise every ``nn.Linear`` inside a numbered block, and where a
    backbone has none (CNNs) every non-grouped ``nn.Conv2d`` inside a numbered block. ``accepts`` (a method's own
    layer constraint) filters every candidate set, so a method that cannot take a layer type falls through to none.
    """
    ok = accepts or (lambda m: True)
    for family_re, module_re in TARGET_OVERRIDES.items():
        if re.match(family_re, family_key or ""):
            names = [n for n, m in model.named_modules() if re.fullmatch(module_re, n)
                     and isinstance(m, (nn.Linear, nn.Conv2d)) and getattr(m, "groups", 1) == 1 and ok(m)]
            if names:
                return names
    in_block = re.compile(BLOCK_PATTERN + r"\.")
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and in_block.search(n) and ok(m)]
    if linears:
        return linears
    return [n for n, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and m.groups == 1 and in_block.search(n) and ok(m)]
