"""``prompt_tuning``: soft prompt tokens at the input of a text encoder (Lester et al. 2021); the head trains too."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from hftransfer.errors import ConfigurationError
from hftransfer.methods.base import HeadWarmup
from hftransfer.methods.head_probe import HeadProbeConfig
from hftransfer.methods.prompts import (
    TEXT_PROMPT_FAMILIES,
    BackboneDropoutOption,
    InputPrompts,
    PromptMethod,
    text_token_ids,
)
from hftransfer.methods.registry import register_method


PROMPT_TUNING_INITS = ("random", "text")


@dataclass
class PromptTuningConfig(HeadProbeConfig, BackboneDropoutOption):
    num_virtual_tokens: int = field(default=20, metadata={"help": "learned tokens inserted after [CLS]"})
    init: str = field(default="random", metadata={
        "help": "'random' (normal, scaled like the word embeddings) or 'text' (the word embeddings of init_text)"})
    init_text: str | None = field(default=None, metadata={
        "help": "with init='text': a task description, e.g. 'Is this movie review positive or negative?'"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the prompt tokens"})

    def __post_init__(self):
        if self.num_virtual_tokens < 1:
            raise ConfigurationError(f"num_virtual_tokens must be >= 1; received {self.num_virtual_tokens}.")
        if self.init not in PROMPT_TUNING_INITS:
            raise ConfigurationError(f"init={self.init!r} is not supported; choose one of {PROMPT_TUNING_INITS}.")
        if self.init == "text" and not (self.init_text or "").strip():
            raise ConfigurationError("init='text' needs init_text (the text whose word embeddings start the prompt).")
        if self.init != "text" and self.init_text:
            raise ConfigurationError(f"init_text={self.init_text!r} is only used with init='text'; received "
                                     f"init={self.init!r}. Set init: text or drop init_text.")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigurationError(f"dropout must be in [0, 1); received {self.dropout}.")
        super().__post_init__()


@register_method("prompt_tuning", PromptTuningConfig,
                 defaults={"optim": {"name": "adamw", "lr": 3e-2, "weight_decay": 0.0},
                           "scheduler": {"warmup_ratio": 0.06}})
class PromptTuning(PromptMethod):
    """Prompt tuning: soft prompt tokens after [CLS] of a frozen text encoder, random or text-initialised."""

    modality = "text"
    supported_backbones = TEXT_PROMPT_FAMILIES
    instead = "Use vpt for vision transformers, or lora / adapter for any backbone."
    config: PromptTuningConfig

    def head_warmup(self) -> HeadWarmup | None:
        return self.config.head_warmup()

    def num_virtual_tokens(self) -> int:
        return self.config.num_virtual_tokens

    def build_hook(self, model, tokens) -> InputPrompts:
        cfg = self.config
        words = model.backbone.base_model().get_input_embeddings().weight.detach()
        if cfg.init == "text":
            ids = text_token_ids(model.backbone.preprocessor.tokenizer, cfg.init_text, cfg.num_virtual_tokens)
            prompts = words[torch.tensor(ids)].clone().float()
        else:
            prompts = torch.randn(cfg.num_virtual_tokens, words.shape[1]) * words.float().std()
        return InputPrompts(prompts, cfg.dropout)
