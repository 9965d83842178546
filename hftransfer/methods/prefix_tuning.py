"""``prefix_tuning``: a learned prefix in every layer of a text encoder (P-Tuning v2): deep prompt tokens (default) or
the keys and values themselves."""

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
    KeyValuePrefixes,
    PromptMethod,
    key_value_layers,
    project_to_key_values,
    word_activations,
)
from hftransfer.methods.registry import register_method


PREFIX_INITS = (*PROMPT_INITS, "activations")
PREFIX_FORMS = ("tokens", "key_value")


@dataclass
class PrefixTuningConfig(HeadProbeConfig, BackboneDropoutOption):
    num_virtual_tokens: int = field(default=20, metadata={"help": "prompt tokens per layer"})
    form: str = field(default="tokens", metadata={"help": (
        "'tokens': deep prompts, hidden states that each layer turns into keys, values (and unused queries); "
        "'key_value': each layer's attention gets learned keys and values directly, free of each other (Li & Liang's "
        "and P-Tuning v2's past_key_values; twice the parameters). Its keys and values begin as what each layer makes "
        "of hidden-state prompts drawn by init, so with prompt_positions=false it starts as the same function as "
        "form='tokens'")})
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
        "(as with P-Tuning v2's key/value prefixes). With form='key_value' it says the same of the text: true moves "
        "it back behind the prefix's num_virtual_tokens positions, false keeps it where it was (P-Tuning v2)")})

    def __post_init__(self):
        if self.num_virtual_tokens < 1:
            raise ConfigurationError(f"num_virtual_tokens must be >= 1; received {self.num_virtual_tokens}.")
        if self.projection_hidden_size < 1:
            raise ConfigurationError(f"projection_hidden_size must be >= 1; received {self.projection_hidden_size}.")
        if self.form not in PREFIX_FORMS:
            raise ConfigurationError(f"form={self.form!r} is not supported; choose one of {PREFIX_FORMS}.")
        if self.form == "key_value" and self.projection:
            raise ConfigurationError("projection=true makes prompt tokens with an MLP; form='key_value' learns the "
                                     "keys and values themselves. Use one of the two.")
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

    def check_backbone(self, model) -> None:
        super().check_backbone(model)
        if self.config.form == "key_value":
            key_value_layers(model.backbone.token_interface())

    def build_hook(self, model, tokens) -> DeepPrompts | KeyValuePrefixes:
        cfg = self.config
        activations = cfg.init == "activations"
        key_value = cfg.form == "key_value"
        # The key/value form starts from hidden-state prompts as the block sees them (after the embedding layer).
        hook = DeepPrompts(len(tokens.blocks()), cfg.num_virtual_tokens, tokens.hidden_size,
                           "xavier" if activations else cfg.init, cfg.dropout,
                           cfg.projection_hidden_size if cfg.projection else None,
                           embed=cfg.prompt_positions and not key_value)
        if activations:
            with torch.no_grad():
                hook.prompts.copy_(word_activations(model, tokens, cfg.num_virtual_tokens, hook.embeds_prompts,
                                                    cfg.init_text))
        if not key_value:
            return hook
        keys, values = project_to_key_values(tokens, hook.prompts)
        return KeyValuePrefixes(keys, values, cfg.dropout, embed=cfg.prompt_positions)
