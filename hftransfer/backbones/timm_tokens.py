"""The token interface of timm ``VisionTransformer`` models (and subclasses such as DeiT distilled, registers)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hftransfer.backbones.tokens import TokenInterface, TokenSequence


def is_timm_vit(model: nn.Module) -> bool:
    from timm.models.vision_transformer import VisionTransformer  # heavy: loaded only when used

    return isinstance(model, VisionTransformer)


class TimmViTTokens(TokenInterface):
    """patch_embed -> _pos_embed (class/register tokens + positions) -> patch_drop -> norm_pre -> blocks -> norm ->
    forward_head (the model's own pooling: token, avg, map, ...). Prompts take no position embedding."""

    kind = "image"

    @property
    def hidden_size(self) -> int:
        return int(self.model.embed_dim)

    def embed_tokens(self, inputs: dict[str, torch.Tensor], prompts: torch.Tensor | None = None) -> TokenSequence:
        model = self.model
        x = model.patch_embed(inputs["pixel_values"])
        x = model._pos_embed(x)
        x = model.patch_drop(x)
        x = model.norm_pre(x)
        num_prefix = int(model.num_prefix_tokens)
        seq = TokenSequence(x, None, num_prefix)
        if prompts is not None:
            seq = seq.insert_virtual(prompts)
        return seq

    def blocks(self) -> list[nn.Module]:
        return list(self.model.blocks)

    def call_block(self, block: nn.Module, tokens: torch.Tensor, attention_mask: Any) -> torch.Tensor:
        return block(tokens) if attention_mask is None else block(tokens, attn_mask=attention_mask)

    def gradient_checkpointing(self) -> bool:
        return bool(getattr(self.model, "grad_checkpointing", False))

    def pool(self, seq: TokenSequence) -> torch.Tensor:
        model = self.model
        x = model.norm(seq.without_virtual().tokens)
        return model.forward_head(x)
