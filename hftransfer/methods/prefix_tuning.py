"""``prefix_tuning``: deep prompts, fresh learned tokens before every layer of a text encoder (P-Tuning v2)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from hftransfer.errors import ConfigurationError
from hftransfer.methods.base import HeadWarmup
from hftransfer.methods.head_probe import HeadProbeConfig
from hftransfer.methods.prompts import (
    PROMPT_INITS,
    TEXT_PROMPT_FAMILIES,
    BackboneDropoutOption,
    DeepPrompts,
    PromptMethod,
    word_activations,
)
from hftransfer.methods.registry import register_method


PREFIX_INITS = (*PROMPT_INITS, "activations")


@dataclass
class PrefixTuningConfig(HeadProbeConfig, BackboneDropoutOption):
    num_virtual_tokens: int = field(default=20, metadata={"help": "prompt tokens per layer"})
    projection: bool = field(default=False, metadata={
        "help": "reparameterise the per-layer prompts by a two-layer tanh MLP (P-Tuning v2's option)"})
    projection_hidden_size: int = field(default=512, metadata={"help": "width of that MLP"})
    init: str = field(default="xavier", metadata={"help": (
        "'xavier' (uniform), 'normal' (std 0.02) or 'activations': each layer's prompts start as what real words are "
        "entering that layer of the frozen encoder (Li & Liang 2021): init_text's words, or words drawn from the "
        "vocabulary")})
    init_text: str | None = field(default=None, metadata={
        "help": "with init='activations': the words to start from, e.g. 'Is this movie review positive or negative?'"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the prompt tokens"})
    prompt_positions: bool = field(default=True, metadata={"help": (
        "true: the first layer's prompts enter as virtual words (word-embedding space, position embeddings), which "
        "moves the text back by num_virtual_tokens positions and shortens max_length by as much; false: they join "
        "after the embedding layer like every later layer's prompts, and the text keeps its pretrained positions "
        "(as with P-Tuning v2's key/value prefixes)")})

    def __post_init__(self):
        if self.num_virtual_tokens < 1:
            raise ConfigurationError(f"num_virtual_tokens must be >= 1; received {self.num_virtual_tokens}.")
        if self.projection_hidden_size < 1:
            raise ConfigurationError(f"projection_hidden_size must be >= 1; received {self.projection_hidden_size}.")
        if self.init not in PREFIX_INITS:
            raise ConfigurationError(f"init={self.init!r} is not supported; choose one of {PREFIX_INITS}.")
        if self.init_text and self.init != "activations":
            raise ConfigurationError(f"init_text={self.init_text!r} is only used with init='activations'; received "
                                     f"init={self.init!r}. Set init: activations or drop init_text.")
        if self.init == "activations" and self.projection:
            raise ConfigurationError("init='activations' sets the prompts themselves, but projection=true makes them "
                                     "with an MLP; use one of the two.")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigurationError(f"dropout must be in [0, 1); received {self.dropout}.")
        super().__post_init__()


@register_method("prefix_tuning", PrefixTuningConfig,
                 defaults={"optim": {"name": "adamw", "lr": 1e-2, "weight_decay": 0.0},
                           "scheduler": {"warmup_ratio": 0.06}})
class PrefixTuning(PromptMethod):
    """Prefix tuning (P-Tuning v2 deep prompts): new prompt tokens before every layer of a frozen text encoder."""

    modality = "text"
    supported_backbones = TEXT_PROMPT_FAMILIES
    instead = "Use vpt (deep=true) for vision transformers, or lora / adapter for any backbone."
    config: PrefixTuningConfig

    def head_warmup(self) -> HeadWarmup | None:
        return self.config.head_warmup()

    def num_virtual_tokens(self) -> int:
        return self.config.num_virtual_tokens

    def embeds_prompts(self) -> bool:
        return self.config.prompt_positions

    def build_hook(self, model, tokens) -> DeepPrompts:
        cfg = self.config
        activations = cfg.init == "activations"
        hook = DeepPrompts(len(tokens.blocks()), cfg.num_virtual_tokens, tokens.hidden_size,
                           "xavier" if activations else cfg.init, cfg.dropout,
                           cfg.projection_hidden_size if cfg.projection else None, embed=cfg.prompt_positions)
        if activations:
            with torch.no_grad():
                hook.prompts.copy_(word_activations(model, tokens, cfg.num_virtual_tokens, cfg.prompt_positions,
                                                    cfg.init_text))
        return hook
