"""Token interfaces of transformers backbones: ViT/DeiT image encoders and BERT-family text encoders."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from hftransfer.backbones.architectures import Architecture, token_architecture
from hftransfer.backbones.pooling import POOLERS
from hftransfer.backbones.tokens import TokenInterface, TokenSequence, insert_after_prefix
from hftransfer.errors import ConfigurationError


def _layers(model: nn.Module, paths: tuple[str, ...]) -> nn.ModuleList:
    """The blocks' ``nn.ModuleList`` at the first of ``paths`` (the family's ``layer_lists``) that holds one."""
    for path in paths:
        node: Any = model
        for part in path.split("."):
            node = getattr(node, part, None)
        if isinstance(node, nn.ModuleList):
            return node
    raise AttributeError(f"{type(model).__name__} has no {'/'.join(paths)} list.")


class _TransformersTokens(TokenInterface):
    """A transformers token interface; ``architecture`` is the family's record in the architecture table."""

    def __init__(self, backbone: nn.Module, architecture: Architecture):
        super().__init__(backbone)
        self.architecture = architecture
    @property
    def hidden_size(self) -> int:
        config = self.model.config
        return int(getattr(config, "hidden_size", None) or config.dim)

    def blocks(self) -> list[nn.Module]:
        return list(_layers(self.model, self.architecture.layer_lists))

    def call_block(self, block: nn.Module, tokens: torch.Tensor, attention_mask: Any) -> torch.Tensor:
        out = block(tokens, attention_mask)
        return out[0] if isinstance(out, tuple) else out

    def gradient_checkpointing(self) -> bool:
        model = self.model
        # transformers 5 renamed the property (the old name warns).
        name = "is_activation_checkpointing" if hasattr(type(model), "is_activation_checkpointing") else \
            "is_gradient_checkpointing"
        return bool(getattr(model, name, False))

    def checkpoints_itself(self, block: nn.Module) -> bool:
        return bool(getattr(block, "gradient_checkpointing", False)) and block.training

    def key_value_projections(self, block: nn.Module) -> tuple[nn.Module, nn.Module] | None:
        if self.architecture.key_value is None:
            return None
        key, value = (block.get_submodule(path) for path in self.architecture.key_value)
        return key, value

    def _pooled(self, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        pooling = self.backbone.pooling
        pooler = getattr(self.model, "pooler", None)
        out = SimpleNamespace(last_hidden_state=hidden,
                              pooler_output=pooler(hidden) if pooling == "pooler" and pooler is not None else None)
        return POOLERS[pooling](out, mask)


class VisionTokens(_TransformersTokens):
    """ViT/DeiT: embeddings ([CLS] (+ distillation token) + positions + dropout) -> layers -> layernorm -> pooling."""

    kind = "image"

    def embed_tokens(self, inputs: dict[str, torch.Tensor], prompts: torch.Tensor | None = None) -> TokenSequence:
        model = self.model
        pixels = inputs["pixel_values"]
        weight = model.embeddings.patch_embeddings.projection.weight
        x = model.embeddings(pixels.to(weight.dtype))
        num_prefix = 1 + int(getattr(model.embeddings, "distillation_token", None) is not None)
        seq = TokenSequence(x, None, num_prefix)
        if prompts is not None:
            seq = seq.insert_virtual(prompts)
        return seq

    def pool(self, seq: TokenSequence) -> torch.Tensor:
        seq = seq.without_virtual()
        return self._pooled(self.model.layernorm(seq.tokens), None)


class TextTokens(_TransformersTokens):
    """BERT/RoBERTa/DistilBERT: prompts are spliced in after [CLS] as input embeddings (virtual words), so they get
    position (and token-type 0) embeddings and the embedding LayerNorm like real words and use up positions.
    Layers get the attention mask built by transformers' own ``create_bidirectional_mask`` (SDPA, eager, ...)."""

    kind = "text"
    prompts_take_positions = True
    num_prefix = 1  # [CLS] (RoBERTa's <s>)

    @property
    def max_positions(self) -> int:
        return text_positions(self.model.config, self.architecture)

    def embed_tokens(self, inputs: dict[str, torch.Tensor], prompts: torch.Tensor | None = None) -> TokenSequence:
        embeddings = self.model.embeddings
        ids = inputs["input_ids"]
        mask = inputs.get("attention_mask")
        types = inputs.get("token_type_ids")
        distil = self.model.config.model_type == "distilbert"
        if mask is not None and not bool(mask[:, 0].all()):
            raise ConfigurationError(
                "Virtual tokens go after the first token ([CLS]), but this batch is left-padded (attention_mask[:, 0] "
                "has zeros). Pad on the right (tokenizer.padding_side = 'right')."
            )
        if prompts is None:
            x = embeddings(ids) if distil else embeddings(input_ids=ids, token_type_ids=types)
            return TokenSequence(x, mask, self.num_prefix)
        batch, count = ids.shape[0], prompts.shape[1]
        words = insert_after_prefix(embeddings.word_embeddings(ids), self.num_prefix, prompts)
        if mask is not None:
            mask = insert_after_prefix(mask, self.num_prefix, mask.new_ones(batch, count))
        if distil:
            x = embeddings(None, inputs_embeds=words)
        else:
            if types is not None:
                types = insert_after_prefix(types, self.num_prefix, types.new_zeros(batch, count))
            x = embeddings(input_ids=None, token_type_ids=types, inputs_embeds=words)
        return TokenSequence(x, mask, self.num_prefix, count)

    def attention_mask(self, seq: TokenSequence) -> Any:
        if seq.mask is None:
            return None
        from transformers.masking_utils import create_bidirectional_mask  # heavy: loaded only when used

        return create_bidirectional_mask(config=self.model.config, inputs_embeds=seq.tokens, attention_mask=seq.mask)

    def pool(self, seq: TokenSequence) -> torch.Tensor:
        seq = seq.without_virtual()
        return self._pooled(seq.tokens, seq.mask)


def text_positions(config: Any, architecture: Architecture | None = None) -> int | None:
    """Tokens a text encoder of a token-interface family can take: its position embeddings, less the padding offset
    of RoBERTa-style position ids. None for other model types (their position scheme is not in the table)."""
    architecture = architecture or token_architecture(getattr(config, "model_type", None), "text")
    if architecture is None or getattr(config, "max_position_embeddings", None) is None:
        return None
    offset = (config.pad_token_id + 1) if config.model_type in architecture.position_offset_model_types else 0
    return int(config.max_position_embeddings) - offset


def transformers_token_interface(backbone: nn.Module) -> TokenInterface | None:
    """The token interface of the architecture-table family whose ``token_model_types`` hold the model's type."""
    model_type = getattr(backbone.base_model().config, "model_type", None)
    architecture = token_architecture(model_type, backbone.modality)
    if architecture is None:
        return None
    return (VisionTokens if architecture.token_family == "image" else TextTokens)(backbone, architecture)
