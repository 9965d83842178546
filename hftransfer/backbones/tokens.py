"""The token-sequence extension point: embed -> token sequence -> blocks -> pool, one implementation per family.

Prompt methods (``prompt_tuning``, ``p_tuning``, ``prefix_tuning``, ``vpt``) act only through this interface, never
on a library's internals: a :class:`TokenInterface` embeds the inputs (optionally splicing virtual tokens in right
after the prefix tokens: ``[CLS]``, registers, distillation token), runs the blocks one by one (a hook may rewrite
the sequence before each block) and pools the result with the backbone's own pooling, virtual tokens left out.

Implementations: timm ``VisionTransformer`` (``timm_tokens.py``), transformers ViT/DeiT and BERT-family text encoders
(``transformers_tokens.py``). ``Backbone.token_interface()`` returns the one that fits, or None.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


@dataclass
class TokenSequence:
    """A backbone's hidden states between embedding and pooling.

    ``tokens`` is (batch, length, dim); ``mask`` (batch, length) is 1 on real tokens and 0 on padding (None: no
    padding); the first ``num_prefix`` tokens are special ([CLS], registers, ...); the next ``num_virtual`` are
    virtual (prompt) tokens, which pooling ignores.
    """

    tokens: torch.Tensor
    mask: torch.Tensor | None
    num_prefix: int
    num_virtual: int = 0

    @property
    def virtual(self) -> slice:
        return slice(self.num_prefix, self.num_prefix + self.num_virtual)

    def replace(self, **changes: Any) -> TokenSequence:
        return dataclasses.replace(self, **changes)

    def with_virtual(self, prompts: torch.Tensor) -> TokenSequence:
        """Replace the virtual tokens by ``prompts`` (batch, num_virtual, dim) (deep prompts)."""
        if prompts.shape[1] != self.num_virtual:
            raise ValueError(f"{prompts.shape[1]} prompts cannot replace {self.num_virtual} virtual tokens.")
        start, end = self.virtual.start, self.virtual.stop
        tokens = torch.cat([self.tokens[:, :start], prompts.to(self.tokens.dtype), self.tokens[:, end:]], dim=1)
        return self.replace(tokens=tokens)

    def insert_virtual(self, prompts: torch.Tensor) -> TokenSequence:
        """This (embedded) sequence with ``prompts`` (batch, P, dim) spliced in after the prefix tokens as hidden
        states: they get no position embedding, so the real tokens keep their positions; the mask counts them."""
        mask = self.mask
        if mask is not None:
            mask = insert_after_prefix(mask, self.num_prefix, mask.new_ones(mask.shape[0], prompts.shape[1]))
        return self.replace(tokens=insert_after_prefix(self.tokens, self.num_prefix, prompts), mask=mask,
                            num_virtual=prompts.shape[1])

    def without_virtual(self) -> TokenSequence:
        """The sequence with the virtual tokens removed (what pooling sees)."""
        if not self.num_virtual:
            return self
        def keep(t: torch.Tensor) -> torch.Tensor:
            return torch.cat([t[:, :self.num_prefix], t[:, self.virtual.stop:]], dim=1)

        return self.replace(tokens=keep(self.tokens), mask=None if self.mask is None else keep(self.mask),
                            num_virtual=0)


def insert_after_prefix(tensor: torch.Tensor, num_prefix: int, inserted: torch.Tensor) -> torch.Tensor:
    """``tensor[:, :num_prefix] + inserted + tensor[:, num_prefix:]`` along the sequence dimension."""
    return torch.cat([tensor[:, :num_prefix], inserted.to(tensor.dtype), tensor[:, num_prefix:]], dim=1)


BlockHook = Callable[[int, TokenSequence], TokenSequence]


class TokenHook(nn.Module):
    """What a prompt method attaches to a backbone (``Backbone.attach_token_hook``): its virtual tokens.

    ``forward(batch_size)`` returns ``(input_prompts, block_prompts)``: (batch, P, dim) tokens spliced in after the
    prefix tokens at embedding time, and optionally (num_blocks, batch, P, dim) tokens that replace the virtual tokens
    before every block i >= 1 (deep prompts; entry 0 is the input prompts).
    """

    num_virtual: int
    # True: the input prompts go through the backbone's embedding layer (text: as virtual words, with position
    # embeddings, so the text behind them moves by P positions); False: they join the embedded sequence as hidden
    # states and every real token keeps its pretrained position.
    embeds_prompts: bool = True

    def forward(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def attach(self, tokens: TokenInterface) -> None:
        """Called once when the hook joins a backbone whose token interface is ``tokens`` (key/value prefixes register
        their forward hooks on the blocks' projections here). Default: nothing."""


class TokenInterface(abc.ABC):
    """One backbone family's path from inputs to pooled features through an explicit token sequence.

    ``kind`` is the modality ("image" or "text"). ``prompts_take_positions`` says whether virtual tokens inserted at
    embedding time get position embeddings (text encoders: yes, they are virtual words and use up positions; ViTs:
    no, as in VPT). Subclasses implement :meth:`embed_tokens`, :meth:`blocks`, :meth:`call_block` and :meth:`pool`.
    """

    kind: str
    prompts_take_positions: bool = False
    num_prefix: int | None = None  # prefix tokens before the virtual ones, where the whole family has the same count

    def __init__(self, backbone: nn.Module):
        self.backbone = backbone

    @property
    def model(self) -> nn.Module:
        return self.backbone.base_model()

    @property
    @abc.abstractmethod
    def hidden_size(self) -> int:
        """Width of the token sequence."""

    @property
    def max_positions(self) -> int | None:
        """Position embeddings available (text encoders), None when the length is not limited this way."""
        return None

    @abc.abstractmethod
    def embed_tokens(self, inputs: dict[str, torch.Tensor], prompts: torch.Tensor | None = None) -> TokenSequence:
        """Inputs -> token sequence; ``prompts`` (batch, P, dim), if given, go right after the prefix tokens."""

    @abc.abstractmethod
    def blocks(self) -> list[nn.Module]:
        """The transformer blocks, in order."""

    @abc.abstractmethod
    def call_block(self, block: nn.Module, tokens: torch.Tensor, attention_mask: Any) -> torch.Tensor:
        """Run one block on ``tokens`` with the mask from :meth:`attention_mask`."""

    @abc.abstractmethod
    def pool(self, seq: TokenSequence) -> torch.Tensor:
        """Final norm + the backbone's own pooling, virtual tokens excluded: (batch, num_features)."""

    def attention_mask(self, seq: TokenSequence) -> Any:
        """The padding mask in the form the blocks take (computed once per forward). Default: no mask."""
        return None

    def key_value_projections(self, block: nn.Module) -> tuple[nn.Module, nn.Module] | None:
        """The layers of ``block`` whose outputs (batch, length, dim) are its attention's keys and values; None when
        this family's are not known (or not separate layers)."""
        return None

    def gradient_checkpointing(self) -> bool:
        """Whether the backbone was asked to recompute block activations in the backward pass."""
        return False

    def checkpoints_itself(self, block: nn.Module) -> bool:
        """Whether calling ``block`` already checkpoints (transformers layers do, in train mode)."""
        return False

    def run_blocks(self, seq: TokenSequence, before_block: BlockHook | None = None) -> TokenSequence:
        """Every block in order; ``before_block(i, seq)`` runs before block i (deep prompts replace tokens there).

        Gradient checkpointing, when enabled on the backbone, also covers a frozen backbone in eval mode.
        """
        mask = self.attention_mask(seq)
        checkpointing = self.gradient_checkpointing() and torch.is_grad_enabled()
        for index, block in enumerate(self.blocks()):
            if before_block is not None:
                seq = before_block(index, seq)
            if checkpointing and not self.checkpoints_itself(block):
                tokens = checkpoint(self.call_block, block, seq.tokens, mask, use_reentrant=False)
            else:
                tokens = self.call_block(block, seq.tokens, mask)
            seq = seq.replace(tokens=tokens)
        return seq

    def forward(self, inputs: dict[str, torch.Tensor], hook: TokenHook | None = None) -> torch.Tensor:
        """Pooled features for ``inputs``; without a hook this equals the backbone's own forward."""
        if hook is None:
            return self.pool(self.run_blocks(self.embed_tokens(inputs)))
        batch = next(iter(inputs.values())).shape[0]
        prompts, deep = hook(batch)
        if hook.embeds_prompts:
            seq = self.embed_tokens(inputs, prompts)
        else:
            seq = self.embed_tokens(inputs).insert_virtual(prompts)
        if deep is None:
            return self.pool(self.run_blocks(seq))
        if deep.shape[0] != len(self.blocks()):
            raise ValueError(f"{deep.shape[0]} sets of deep prompts for {len(self.blocks())} blocks.")

        def replace(index: int, current: TokenSequence) -> TokenSequence:
            return current if index == 0 else current.with_virtual(deep[index])

        return self.pool(self.run_blocks(seq, replace))
