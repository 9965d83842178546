"""What every prompt method shares: the prompt modules (token hooks) and a base class over the token interface.

Prompt methods never touch a library's internals: they attach a :class:`~hftransfer.backbones.tokens.TokenHook` to
the backbone (``backbone.token_hook``, an ordinary submodule, so its parameters are saved, checkpointed, resumed and
pushed like any other) and the backbone's token interface splices the virtual tokens in, masks and pools around them.
"""

from __future__ import annotations

import abc
import functools
import logging
import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from hftransfer.backbones.tokens import TokenHook, TokenInterface
from hftransfer.errors import ConfigurationError
from hftransfer.methods.base import TransferMethod
from hftransfer.saved_format import HEAD_PREFIX


logger = logging.getLogger("hftransfer")

PROMPT_PREFIX = "backbone.token_hook."
PROMPT_INITS = ("xavier", "normal")
TEXT_PROMPT_FAMILIES = "transformers text encoders: BERT, RoBERTa, XLM-RoBERTa, CamemBERT, DistilBERT"
VISION_PROMPT_FAMILIES = "vision transformers: timm VisionTransformer (ViT, DeiT, registers), transformers ViT/DeiT"
# Real text needs at least [CLS], one token and [SEP].
MIN_TEXT_TOKENS = 3


def init_prompts(tensor: torch.Tensor, init: str) -> torch.Tensor:
    """Initialise (..., P, dim) prompts: "xavier" uniform per (P, dim) matrix (VPT) or "normal" (std 0.02)."""
    with torch.no_grad():
        if init == "xavier":
            num, dim = tensor.shape[-2:]
            bound = math.sqrt(6.0 / (num + dim))
            tensor.uniform_(-bound, bound)
        elif init == "normal":
            tensor.normal_(0.0, 0.02)
        else:
            raise ConfigurationError(f"init={init!r} is not a prompt initialisation; choose one of {PROMPT_INITS}.")
    return tensor


def text_token_ids(tokenizer, text: str, count: int) -> list[int]:
    """``count`` token ids of ``text`` (no special tokens), repeated as often as needed: a text initialisation."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ConfigurationError(f"init_text={text!r} gives no tokens.")
    return (ids * -(-count // len(ids)))[:count]


def word_activations(model, tokens: TokenInterface, count: int, words_first: bool,
                     text: str | None = None) -> torch.Tensor:
    """(num_blocks, count, dim): what ``count`` real words are as they enter each block of the frozen text encoder
    (Li & Liang 2021's prefix initialisation). The words are ``text``'s tokens (repeated), or ``count`` whole words
    drawn from the vocabulary with torch's generator (the run's seed). With ``words_first`` entry 0 is their word
    embeddings (the first layer's prompts then enter as words); otherwise it is their embedded hidden states.
    """
    tokenizer = model.backbone.preprocessor.tokenizer
    if text:
        ids = text_token_ids(tokenizer, text, count)
    else:  # whole words; a vocabulary without any (tiny test tokenizers): any row of the embedding matrix
        special = set(tokenizer.all_special_ids)
        rows = model.backbone.base_model().get_input_embeddings().num_embeddings
        vocab = (sorted(i for word, i in tokenizer.get_vocab().items() if word.isalpha() and i not in special)
                 or list(range(rows)))
        ids = [vocab[int(k)] for k in torch.randint(len(vocab), (count,))]
    backbone = model.backbone
    device = next(backbone.parameters()).device
    first = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    last = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    inputs = {"input_ids": torch.tensor([[first, *ids, last]], device=device)}
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    seen: list[torch.Tensor] = []

    def grab(index: int, seq):
        seen.append(seq.tokens[0, 1:1 + count].float())
        return seq

    training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            tokens.run_blocks(tokens.embed_tokens(inputs), grab)
            if words_first:
                seen[0] = backbone.base_model().get_input_embeddings()(inputs["input_ids"])[0, 1:1 + count].float()
    finally:
        backbone.train(training)
    return torch.stack(seen).cpu()


@dataclass
class BackboneDropoutOption:
    """The ``backbone_dropout`` option of the text prompt methods (a config mixin: one declaration, one default)."""

    backbone_dropout: bool = field(default=False, metadata={"help": (
        "Keep the frozen encoder's own dropout on while training. false (default): the frozen encoder runs in eval "
        "mode, so only the prompts and the head see a changing function; on SST-2 with MiniLM this scored higher "
        "on dev (prefix_tuning +0.61, prompt_tuning +0.95 points, 3 seeds) and trained 1.3-1.5x faster "
        "(bench/results/RESULTS.md).")})


class InputPrompts(TokenHook):
    """Shallow prompts: P learned tokens inserted once, at the input (prompt tuning, VPT-shallow)."""

    def __init__(self, prompts: torch.Tensor, dropout: float = 0.0):
        super().__init__()
        self.num_virtual = prompts.shape[0]
        self.prompts = nn.Parameter(prompts)
        self.dropout = nn.Dropout(dropout)

    def forward(self, batch_size: int) -> tuple[torch.Tensor, None]:
        return self.dropout(self.prompts.unsqueeze(0).expand(batch_size, -1, -1)), None


class EncodedPrompts(TokenHook):
    """P-tuning: input prompts produced by an MLP from P learned embeddings (reparameterisation, Liu et al. 2021)."""

    def __init__(self, num_virtual: int, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.num_virtual = num_virtual
        self.embedding = nn.Parameter(init_prompts(torch.empty(num_virtual, dim), "xavier"))
        self.encoder = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                     nn.Linear(hidden, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, batch_size: int) -> tuple[torch.Tensor, None]:
        prompts = self.encoder(self.embedding)
        return self.dropout(prompts.unsqueeze(0).expand(batch_size, -1, -1)), None


class DeepPrompts(TokenHook):
    """Deep prompts: fresh P tokens before every block, replacing the previous block's (P-Tuning v2, VPT-deep).

    With ``projection_hidden`` the (num_blocks, P, dim) prompts come from P embeddings through a two-layer tanh MLP
    (P-Tuning v2's reparameterisation); otherwise they are learned directly. ``embed=False``: the first block's
    prompts join the embedded sequence like the later ones (no position embedding: the text keeps its positions).
    """

    def __init__(self, num_blocks: int, num_virtual: int, dim: int, init: str = "xavier", dropout: float = 0.0,
                 projection_hidden: int | None = None, embed: bool = True):
        super().__init__()
        self.num_virtual, self.num_blocks, self.dim = num_virtual, num_blocks, dim
        self.embeds_prompts = embed
        self.dropout = nn.Dropout(dropout)
        if projection_hidden:
            self.embedding = nn.Parameter(init_prompts(torch.empty(num_virtual, dim), init))
            self.projection = nn.Sequential(nn.Linear(dim, projection_hidden), nn.Tanh(),
                                            nn.Linear(projection_hidden, num_blocks * dim))
        else:
            self.prompts = nn.Parameter(init_prompts(torch.empty(num_blocks, num_virtual, dim), init))

    def all_prompts(self) -> torch.Tensor:
        if hasattr(self, "projection"):
            out = self.projection(self.embedding)  # (P, num_blocks * dim)
            return out.view(self.num_virtual, self.num_blocks, self.dim).transpose(0, 1)
        return self.prompts

    def forward(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        prompts = self.all_prompts().unsqueeze(1).expand(-1, batch_size, -1, -1)
        deep = self.dropout(prompts)
        return deep[0], deep


class KeyValuePrefixes(TokenHook):
    """Key/value prefixes (Li & Liang 2021, P-Tuning v2): P learned keys and values in every block's attention.

    The sequence carries P virtual slots (zeros) after the prefix tokens; forward hooks on each block's key and value
    projections overwrite the slots' outputs with the learned (num_blocks, P, dim) ``keys`` and ``values``, so every
    real token attends to them exactly as to P-Tuning v2's ``past_key_values``. Nothing else of the slots is read:
    their keys and values are replaced in every block and pooling drops them. Keys and values are free of each
    other, where deep prompt tokens make both from one hidden state (twice the parameters of :class:`DeepPrompts`).
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, dropout: float = 0.0, embed: bool = True):
        super().__init__()
        self.num_virtual = keys.shape[1]
        self.embeds_prompts = embed
        self.keys, self.values = nn.Parameter(keys), nn.Parameter(values)
        self.dropout = nn.Dropout(dropout)
        self.start = 0  # where the slots begin (the token interface's prefix tokens), set by attach

    def forward(self, batch_size: int) -> tuple[torch.Tensor, None]:
        return self.keys.new_zeros(batch_size, self.num_virtual, self.keys.shape[-1]), None

    def attach(self, tokens: TokenInterface) -> None:
        projections = key_value_layers(tokens)
        if len(projections) != self.keys.shape[0]:
            raise ValueError(f"{self.keys.shape[0]} sets of key/value prefixes for {len(projections)} blocks.")
        self.start = tokens.num_prefix
        for index, (key, value) in enumerate(projections):
            # partial of this module (not a closure): a deep copy of the backbone copies the hooks with it.
            key.register_forward_hook(functools.partial(_write_prefix, self, "keys", index))
            value.register_forward_hook(functools.partial(_write_prefix, self, "values", index))


def key_value_layers(tokens: TokenInterface) -> list[tuple[nn.Module, nn.Module]]:
    """Every block's (key layer, value layer); an error saying what to use instead when the family's are not known
    (or its virtual tokens have no fixed place)."""
    projections = [tokens.key_value_projections(block) for block in tokens.blocks()]
    if tokens.num_prefix is None or any(p is None for p in projections):
        model = tokens.model
        raise ConfigurationError(
            f"form='key_value' writes into every layer's key and value projections, and this library does not know "
            f"where {getattr(model.config, 'model_type', type(model).__name__)!r} models keep them "
            "(backbones/architectures.py, key_value). Use form: tokens.")
    return projections


def _write_prefix(hook: KeyValuePrefixes, name: str, index: int, module: nn.Module, args, output: torch.Tensor):
    """Forward hook of a key (value) layer: its output with the virtual slots replaced by block ``index``'s
    learned keys (values)."""
    prefix = hook.dropout(getattr(hook, name)[index]).to(output.dtype).expand(output.shape[0], -1, -1)
    start, stop = hook.start, hook.start + hook.num_virtual
    return torch.cat([output[:, :start], prefix, output[:, stop:]], dim=1)


def project_to_key_values(tokens: TokenInterface, prompts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(num_blocks, P, dim) hidden-state prompts -> the keys and values each block makes of them: key/value prefixes
    that start as the same function as those deep prompts."""
    keys, values = [], []
    with torch.no_grad():
        for (key, value), prompt in zip(key_value_layers(tokens), prompts):
            weight = next(key.parameters())
            keys.append(key(prompt.to(weight)).float())
            values.append(value(prompt.to(weight)).float())
    return torch.stack(keys).cpu(), torch.stack(values).cpu()


class PromptMethod(TransferMethod):
    """Base of the prompt methods: backbone frozen, virtual tokens + head trained, saved without the backbone.

    Subclasses set ``modality`` ("text" | "image") and implement :meth:`build_hook`.
    """

    saves_full_weights = False
    modality: ClassVar[str]
    instead: ClassVar[str]  # what to use on backbones this method cannot act on

    @abc.abstractmethod
    def num_virtual_tokens(self) -> int:
        """Virtual tokens this method inserts (per block for deep prompts)."""

    @abc.abstractmethod
    def build_hook(self, model, tokens: TokenInterface) -> TokenHook:
        """The prompt module for ``model``'s backbone, whose token interface is ``tokens``."""

    def embeds_prompts(self) -> bool:
        """Whether the input prompts pass through the embedding layer (see ``TokenHook.embeds_prompts``)."""
        return True

    def _prompts_take_positions(self, tokens: TokenInterface) -> bool:
        return tokens.prompts_take_positions and self.embeds_prompts() and tokens.max_positions is not None

    def check_backbone(self, model) -> None:
        backbone = model.backbone
        tokens = backbone.token_interface()
        what = f"{backbone.spec.name!r} ({describe_backbone(backbone)})"
        if backbone.modality != self.modality:
            raise ConfigurationError(
                f"method {self.name!r} puts prompt tokens into {self.supported_backbones}; {what} is "
                f"{'an image' if backbone.modality == 'image' else 'a text'} backbone. {self.instead}"
            )
        if tokens is None:
            raise ConfigurationError(
                f"method {self.name!r} needs a token sequence it can extend ({self.supported_backbones}); {what} has "
                f"none this library knows. Use lora or adapter, which act on layers instead of tokens."
            )
        if self._prompts_take_positions(tokens):
            count, limit = self.num_virtual_tokens(), tokens.max_positions
            if count > limit - MIN_TEXT_TOKENS:
                raise ConfigurationError(
                    f"num_virtual_tokens={count} leaves {limit - count} of the {limit} positions of {what} for the "
                    f"text; use at most {limit - MIN_TEXT_TOKENS} virtual tokens."
                )

    def apply(self, model) -> None:
        backbone = model.backbone
        tokens = backbone.token_interface()
        hook = self.build_hook(model, tokens)
        if self._prompts_take_positions(tokens):
            _leave_room(backbone.preprocessor, tokens.max_positions - hook.num_virtual, hook.num_virtual)
        backbone.attach_token_hook(hook)
        self.set_trainable(model)

    @property
    def keeps_backbone_eval(self) -> bool:
        return isinstance(self.config, BackboneDropoutOption) and not self.config.backbone_dropout

    def is_trained_parameter(self, name: str) -> bool:
        return name.startswith((HEAD_PREFIX, PROMPT_PREFIX))

    def trained_modules(self, model) -> list[nn.Module]:
        return [model.backbone.token_hook] if model.backbone.token_hook is not None else []

    def merge(self, model) -> bool:
        raise ConfigurationError(
            f"method {self.name!r} cannot be merged into plain weights: its prompts are extra tokens in the sequence "
            "(they change which tokens attention sees), not a change of any weight. Save or push the model as it is "
            "(model.save_pretrained / push_to_hub without merge); it reloads with AutoTransfer.from_pretrained."
        )


def _leave_room(preprocessor, room: int, count: int) -> None:
    """Truncate text so that the text plus ``count`` virtual tokens fit the position embeddings."""
    if preprocessor.max_length > room:
        logger.warning("max_length %d -> %d: %d virtual tokens use up positions of the text encoder",
                       preprocessor.max_length, room, count)
        preprocessor.max_length = room


def describe_backbone(backbone) -> str:
    spec = backbone.spec
    model = backbone.base_model()
    if spec.family == "timm":
        return f"timm {spec.options.get('architecture') or type(model).__name__}"
    return f"transformers model_type {getattr(model.config, 'model_type', type(model).__name__)!r}"
