"""The one table of per-architecture module knowledge: where each backbone family keeps its layers.

One :class:`Architecture` record per family, in :data:`ARCHITECTURES`. Every method and token interface that needs a
module name reads it from here (like peft's ``utils/constants.py``, but one record per family):

- default targets of LoRA and the PEFT catalogue (``methods/targets.py``): :attr:`Architecture.lora_targets`;
- IA3's feed-forward modules (``methods/ia3.py``): :attr:`Architecture.ia3_feedforward`;
- bottleneck adapter placement (``methods/adapter.py``): :attr:`Architecture.blocks` with ``attn_out`` / ``mlp_out``
  / ``mlp_in``, or :attr:`Architecture.cnn_blocks` for residual conv adapters;
- prompt methods' token interface (``backbones/transformers_tokens.py``): :attr:`Architecture.token_family` and
  :attr:`Architecture.layer_lists` (and :attr:`Architecture.key_value` for prefix tuning's key/value prefixes).

Adding a backbone family means adding one record here (and a tiny random model to the tests).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Architecture:
    """What hftransfer knows about one backbone family's modules; empty fields: the family has no such rule."""

    name: str  # for messages and docs (what ``adapter.find_sites`` reports)
    # re.match on the timm architecture / transformers model_type that picks ``lora_targets``.
    model_types: str | None = None
    # re.fullmatch on full module names: the default targets of lora, ia3 and the PEFT catalogue (None: every layer
    # inside a numbered block, see ``methods/targets.py``).
    lora_targets: str | None = None
    # Module-name suffixes whose *input* IA3 rescales (PEFT's feedforward_modules): the second MLP layer / the
    # projecting conv.
    ia3_feedforward: tuple[str, ...] = ()
    # Transformer blocks (bottleneck adapters): regex on full names of the blocks, and paths relative to a block of
    # the nn.Linear whose output is the attention branch, the nn.Linear whose output is the MLP branch, and the
    # module whose first input is the MLP branch's input (``parallel`` placement).
    blocks: str | None = None
    attn_out: str | None = None
    mlp_out: str | None = None
    mlp_in: str | None = None
    # CNN blocks (residual 1x1-conv adapters after every block): regex alternative on block names.
    cnn_blocks: str | None = None
    # Token interface of transformers models (prompt methods): "image" or "text", the model types it was built for,
    # the attribute paths of the blocks' nn.ModuleList (first found wins), and the model types whose position ids
    # start after the padding index (RoBERTa style).
    token_family: str | None = None
    token_model_types: tuple[str, ...] = ()
    layer_lists: tuple[str, ...] = ()
    position_offset_model_types: tuple[str, ...] = ()
    # Paths relative to a block of the nn.Linear layers whose outputs are the attention's keys and values (prefix
    # tuning's key/value prefixes write into them).
    key_value: tuple[str, str] | None = None


# Order matters where rules are tried in turn: transformer-block rules (the first that finds blocks wins) and
# lora_targets (the first family whose model_types match and whose regex finds layers wins).
ARCHITECTURES: dict[str, Architecture] = {
    "timm_vit": Architecture(
        name="timm ViT (Block with attn/mlp)",
        ia3_feedforward=("mlp.fc2",),
        blocks=r"(.*\.)?blocks\.\d+", attn_out="attn.proj", mlp_out="mlp.fc2", mlp_in="mlp",
        # Token interface: timm_tokens.py (any timm VisionTransformer subclass, found by type, not by name).
        token_family="image",
    ),
    "transformers_vit": Architecture(
        name="transformers ViT/DeiT",
        ia3_feedforward=("mlp.fc2",),
        blocks=r"(.*\.)?layers?\.\d+", attn_out="attention.o_proj", mlp_out="mlp.fc2", mlp_in="mlp",
        token_family="image", token_model_types=("vit", "deit"), layer_lists=("layers", "encoder.layer"),
    ),
    "transformers_bert": Architecture(
        name="transformers BERT/RoBERTa/ELECTRA",
        # Attention projections and the MLP (peft's LoRA defaults plus the feed-forward).
        model_types=r"^(bert|roberta|electra|xlm-roberta|deberta.*|mpnet|albert)$",
        lora_targets=r".*\.(query|key|value|dense|query_proj|key_proj|value_proj)$",
        ia3_feedforward=("output.dense",),
        blocks=r"(.*\.)?encoder\.layer\.\d+", attn_out="attention.output.dense", mlp_out="output.dense",
        mlp_in="intermediate",
        token_family="text", token_model_types=("bert", "roberta", "xlm-roberta", "camembert"),
        layer_lists=("encoder.layer",), position_offset_model_types=("roberta", "xlm-roberta", "camembert"),
        key_value=("attention.self.key", "attention.self.value"),
    ),
    "transformers_distilbert": Architecture(
        name="transformers DistilBERT",
        model_types=r"^distilbert$",
        lora_targets=r".*\.(q_lin|k_lin|v_lin|out_lin|lin1|lin2)$",
        ia3_feedforward=("lin2",),
        blocks=r"(.*\.)?transformer\.layer\.\d+", attn_out="attention.out_lin", mlp_out="ffn.lin2", mlp_in="ffn",
        token_family="text", token_model_types=("distilbert",), layer_lists=("transformer.layer",),
        key_value=("attention.k_lin", "attention.v_lin"),
    ),
    "transformers_decoder_mlp": Architecture(
        name="transformers BLOOM/GPT-NeoX-style MLP",
        ia3_feedforward=("dense_4h_to_h",),
    ),
    "timm_efficientnet": Architecture(
        name="timm EfficientNet/MobileNet",
        # Pointwise convs (depthwise convs have groups>1 and stay frozen).
        model_types=r"^(efficientnet|tf_efficientnet|mobilenet|mnasnet|fbnet|tinynet|test_efficientnet).*",
        lora_targets=r".*blocks\.\d+\.\d+\.(conv_pw|conv_pwl)$",
        ia3_feedforward=("conv_pwl",),
        cnn_blocks=r"blocks\.\d+\.\d+",
    ),
    "timm_resnet": Architecture(
        name="timm ResNet",
        ia3_feedforward=("conv3", "conv2"),  # bottleneck / basic block: the last conv of the block
        cnn_blocks=r"layer\d+\.\d+",
    ),
    "timm_staged_cnn": Architecture(
        name="timm ConvNeXt and other staged CNNs",
        ia3_feedforward=("fc2",),  # ConvNeXt's mlp.fc2, and the fc2 of squeeze-excitation modules
        cnn_blocks=r"stages\.\d+\.blocks\.\d+|stages\.\d+\.\d+",
    ),
}


def transformer_block_families() -> list[Architecture]:
    """The families with transformer-block adapter rules, in the order they are tried."""
    return [a for a in ARCHITECTURES.values() if a.blocks is not None]


def cnn_block_pattern() -> str:
    """Regex (fullmatch) on the names of every family's CNN blocks."""
    return r"(.*\.)?(" + "|".join(a.cnn_blocks for a in ARCHITECTURES.values() if a.cnn_blocks) + ")"


def ia3_feedforward_pattern() -> str:
    """Regex (fullmatch) on module names whose input IA3 rescales: every family's suffixes, on every backbone."""
    suffixes = dict.fromkeys(s for a in ARCHITECTURES.values() for s in a.ia3_feedforward)
    return r".*\.(" + "|".join(re.escape(s) for s in suffixes) + ")$"


def token_architecture(model_type: str | None, modality: str) -> Architecture | None:
    """The family whose transformers token interface fits ``model_type`` and ``modality``, or None."""
    for arch in ARCHITECTURES.values():
        if arch.token_family == modality and model_type in arch.token_model_types:
            return arch
    return None
