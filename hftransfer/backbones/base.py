"""The backbone interface every model family implements, and the spec that records where it came from."""

from __future__ import annotations

import abc
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from hftransfer.backbones.tokens import TokenHook, TokenInterface
from hftransfer.errors import ConfigurationError


IMAGE_CLASSIFICATION = "image-classification"
TEXT_CLASSIFICATION = "text-classification"
TASK_BY_MODALITY = {"image": IMAGE_CLASSIFICATION, "text": TEXT_CLASSIFICATION}


@dataclass
class BackboneSpec:
    """Where a backbone comes from, enough to fetch it again (or rebuild its architecture offline)."""

    family: str  # "timm" | "transformers"
    name: str  # what the user typed, normalised: hub id, architecture, folder or "packaged:<name>"
    source: str  # "hub" | "architecture" | "local" | "packaged"
    revision: str | None = None  # exact commit id (hub) or package version (packaged)
    pretrained: bool = True  # False: random init (architecture only)
    options: dict[str, Any] = field(default_factory=dict)  # family-specific (timm architecture/model_args, pooling)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BackboneSpec:
        known = {k: data[k] for k in ("family", "name", "source", "revision", "pretrained", "options") if k in data}
        return cls(**known)


@dataclass
class PretrainedHead:
    """The classifier a backbone was pretrained with (kept when the user asks for no new label set)."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    label_names: list[str] | None


class Backbone(nn.Module, metaclass=abc.ABCMeta):
    """A feature extractor: ``forward(**inputs) -> Tensor[batch, num_features]`` (pooled features).

    Subclasses set ``family``, wrap the library model as ``self.model`` (adapter methods act on it) and implement
    ``save_architecture`` / ``from_architecture`` so a saved model can be rebuilt without downloading weights.
    """

    family: ClassVar[str]
    input_names: ClassVar[tuple[str, ...]]

    def __init__(self, model: nn.Module, spec: BackboneSpec, modality: str, num_features: int, preprocessor: Any):
        super().__init__()
        self.model = model
        self.spec = spec
        self.modality = modality
        self.num_features = int(num_features)
        self.preprocessor = preprocessor
        self.pretrained_head: PretrainedHead | None = None
        self.token_hook: TokenHook | None = None  # set by attach_token_hook (prompt methods)

    @property
    def task(self) -> str:
        return TASK_BY_MODALITY[self.modality]

    def select_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Keep the batch entries this backbone consumes (labels, ids and other columns are dropped)."""
        return {k: v for k, v in inputs.items() if k in self.input_names and v is not None}

    def base_model(self) -> nn.Module:
        """The library model without adapter wrappers (PEFT's ``PeftModel``)."""
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    def token_interface(self) -> TokenInterface | None:
        """The embed -> tokens -> blocks -> pool path of this backbone (see ``backbones/tokens.py``), or None when
        the architecture has no token sequence this library knows (CNNs, unlisted transformers)."""
        return None

    def attach_token_hook(self, hook: TokenHook) -> None:
        """Route the forward pass through :meth:`token_interface` with ``hook``'s virtual tokens (prompt methods).

        The hook becomes the submodule ``token_hook``: its parameters are ``backbone.token_hook.*``.
        """
        tokens = self.token_interface()
        if tokens is None:
            raise ConfigurationError(f"{type(self.model).__name__} has no token interface (see backbones/tokens.py); "
                                     "it cannot take virtual tokens. Use a method that acts on layers (lora).")
        self.token_hook = hook
        hook.attach(tokens)

    def forward_tokens(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Pooled features through the token interface (with the attached hook, if any)."""
        return self.token_interface().forward(self.select_inputs(inputs), self.token_hook)

    @abc.abstractmethod
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in the backward pass instead of storing them (less memory, ~30% slower)."""

    @abc.abstractmethod
    def save_architecture(self, directory: Path) -> None:
        """Write the files needed to rebuild this architecture (config, tokenizer) into ``directory``."""

    @classmethod
    @abc.abstractmethod
    def from_architecture(cls, directory: Path, spec: BackboneSpec, trust_remote_code: bool = False) -> Backbone:
        """Rebuild a randomly initialised backbone from files written by :meth:`save_architecture`."""


# Numbered containers used by timm and transformers: blocks.3, layer1.0, layers.3, stages.2, encoder.layer.5 ...
BLOCK_PATTERN = r"(?:^|\.)(?:blocks|layers?\d*|stages|_blocks)\.\d+"


def block_class_names(module: nn.Module) -> list[str]:
    """Class names of the repeated blocks of ``module`` (what FSDP wraps as one unit each), in order of appearance.

    A block is a module whose name ends in a numbered container (:data:`BLOCK_PATTERN`: ViT's ``blocks.3``, BERT's
    ``encoder.layer.5``, ConvNeXt's ``stages.2`` and ``stages.2.blocks.0``); a plain container there (EfficientNet's
    ``blocks.0`` is an ``nn.Sequential``) stands for its children.
    """
    containers = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
    at_block = re.compile(BLOCK_PATTERN + "$")
    names: dict[str, None] = {}
    for name, sub in module.named_modules():
        if not at_block.search(name):
            continue
        for block in sub.children() if isinstance(sub, containers) else (sub,):
            if not isinstance(block, containers):
                names[type(block).__name__] = None
    return list(names)
