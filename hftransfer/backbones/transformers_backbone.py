"""transformers backbones: ``AutoModel`` (no task head) for image and text classification."""

from __future__ import annotations

import contextlib
import inspect
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hftransfer.backbones.base import Backbone, BackboneSpec
from hftransfer.backbones.pooling import POOLERS, default_pooling
from hftransfer.backbones.tokens import TokenInterface
from hftransfer.backbones.transformers_tokens import text_positions, transformers_token_interface
from hftransfer.errors import ConfigurationError
from hftransfer.preprocessing import ImagePreprocessor, TextPreprocessor, data_config_from_image_processor
from hftransfer.utils.io import read_json, write_json


logger = logging.getLogger("hftransfer")


POOLING_FILE = "hftransfer_pooling.json"


def modality_of_config(config: Any) -> str | None:
    """'image' or 'text' from the transformers auto mappings, None when the model type classifies neither."""
    from transformers.models.auto.modeling_auto import (  # heavy: loaded only when used
        MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
    )

    model_type = getattr(config, "model_type", None)
    if model_type in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES:
        return "image"
    if model_type in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES:
        return "text"
    return None


class TransformersBackbone(Backbone):
    """Wraps ``AutoModel``; ``pooling`` turns its hidden states into one vector per example."""

    family = "transformers"
    input_names = ("pixel_values", "input_ids", "attention_mask", "token_type_ids")

    def __init__(self, model: nn.Module, spec: BackboneSpec, modality: str, preprocessor: Any, pooling: str):
        if pooling not in POOLERS:
            raise ConfigurationError(f"pooling={pooling!r} is not supported; choose one of {sorted(POOLERS)}.")
        super().__init__(model, spec, modality, _num_features(model, pooling), preprocessor)
        self.pooling = pooling
        spec.options["pooling"] = pooling

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        if self.token_hook is not None:
            return self.forward_tokens(inputs)
        out = self.model(**inputs, return_dict=True)
        return POOLERS[self.pooling](out, inputs.get("attention_mask"))

    def token_interface(self) -> TokenInterface | None:
        return transformers_token_interface(self)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        model = self.base_model()
        if not model.supports_gradient_checkpointing:
            raise ConfigurationError(f"{type(model).__name__} does not support gradient checkpointing; set "
                                     "model.gradient_checkpointing=false.")
        # transformers >= 5 renamed these (the old names warn); older versions only have the old names.
        if enable:
            if getattr(model.config, "use_cache", None):
                model.config.use_cache = False  # encoders cache nothing; avoids "use_cache=True is incompatible"
            if hasattr(model, "activation_checkpointing_enable"):
                model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        elif hasattr(model, "activation_checkpointing_disable"):
            model.activation_checkpointing_disable()
        else:
            model.gradient_checkpointing_disable()

    def save_architecture(self, directory: Path) -> None:
        directory = Path(directory)
        self.model.config.save_pretrained(directory)
        if isinstance(self.preprocessor, TextPreprocessor):
            self.preprocessor.tokenizer.save_pretrained(directory)
        write_json(directory / POOLING_FILE, {"pooling": self.pooling, "preprocessor": self.preprocessor.to_dict()})

    @classmethod
    def from_architecture(cls, directory: Path, spec: BackboneSpec, trust_remote_code: bool = False
                          ) -> TransformersBackbone:
        from transformers import AutoConfig, AutoModel  # heavy: loaded only when used

        directory = Path(directory)
        extra = read_json(directory / POOLING_FILE)
        config = AutoConfig.from_pretrained(directory, trust_remote_code=trust_remote_code)
        modality = modality_of_config(config) or extra["preprocessor"]["type"]
        kwargs = pooling_layer_kwargs(config, extra["pooling"])
        model = AutoModel.from_config(config, trust_remote_code=trust_remote_code, **kwargs)
        preprocessor = load_preprocessor(directory, config, modality, extra["preprocessor"])
        return cls(model, spec, modality, preprocessor, extra["pooling"])

    @classmethod
    def from_local_dir(cls, directory: Path, spec: BackboneSpec, modality: str | None = None,
                       pooling: str | None = None, trust_remote_code: bool = False, allow_pickle: bool = False,
                       max_length: int = 128, config_overrides: dict[str, Any] | None = None) -> TransformersBackbone:
        """Load pretrained weights from a transformers folder (hub snapshot or ``save_pretrained`` output).

        ``config_overrides`` change the config before the weights load (dropout rates, ``attn_implementation``).
        """
        from transformers import AutoModel  # heavy: loaded only when used

        config, load_kwargs, modality, pooling = _resolve_folder(directory, spec, modality, pooling,
                                                                 trust_remote_code, config_overrides)
        pooler_kwargs = pooling_layer_kwargs(config, pooling)
        with _unused_pooler_not_reported(enabled=bool(pooler_kwargs)):
            model = AutoModel.from_pretrained(
                directory, config=config, trust_remote_code=trust_remote_code,
                use_safetensors=None if allow_pickle else True, **pooler_kwargs, **load_kwargs
            )
        preprocessor = load_preprocessor(Path(directory), config, modality, {"max_length": max_length})
        return cls(model, spec, modality, preprocessor, pooling)


    @classmethod
    def random_from_local_dir(cls, directory: Path, spec: BackboneSpec, modality: str | None = None,
                              pooling: str | None = None, trust_remote_code: bool = False, max_length: int = 128,
                              config_overrides: dict[str, Any] | None = None) -> TransformersBackbone:
        """The architecture of a transformers folder with freshly initialised weights (``pretrained=False``)."""
        from transformers import AutoModel  # heavy: loaded only when used

        config, load_kwargs, modality, pooling = _resolve_folder(directory, spec, modality, pooling,
                                                                 trust_remote_code, config_overrides)
        model = AutoModel.from_config(config, trust_remote_code=trust_remote_code,
                                      **pooling_layer_kwargs(config, pooling), **load_kwargs)
        preprocessor = load_preprocessor(Path(directory), config, modality, {"max_length": max_length})
        return cls(model, spec, modality, preprocessor, pooling)


def _resolve_folder(directory: Path, spec: BackboneSpec, modality: str | None, pooling: str | None,
                    trust_remote_code: bool, config_overrides: dict[str, Any] | None
                    ) -> tuple[Any, dict[str, Any], str, str]:
    """A transformers folder's config (overrides applied), load kwargs, modality and pooling, for pretrained and
    random-init loading alike; a ``modality`` the backbone cannot serve, or a model type that is neither image nor
    text, is an error."""
    from transformers import AutoConfig  # heavy: loaded only when used

    config = AutoConfig.from_pretrained(directory, trust_remote_code=trust_remote_code)
    load_kwargs = apply_config_overrides(config, config_overrides, spec.name)
    if config_overrides:
        spec.options["model_args"] = dict(config_overrides)
    native = modality_of_config(config)
    if modality is not None and native is not None and modality != native:
        raise ConfigurationError(
            f"task={modality}-classification cannot be done by {spec.name!r}: it is a {native} backbone "
            f"(model_type {config.model_type!r}). Pick a {modality} backbone or drop the task argument."
        )
    modality = modality or native
    if modality is None:
        raise ConfigurationError(
            f"The transformers model_type {config.model_type!r} at {spec.name!r} is neither an image nor a text "
            "classification backbone. Pass task='image-classification' or task='text-classification' if you "
            "know it works."
        )
    return config, load_kwargs, modality, pooling or default_pooling(config, modality)


# Passed to ``from_pretrained`` / ``from_config`` instead of being set on the config object.
LOAD_KWARGS = ("attn_implementation",)


def apply_config_overrides(config: Any, overrides: dict[str, Any] | None, name: str) -> dict[str, Any]:
    """Set ``overrides`` (e.g. ``attention_probs_dropout_prob=0.0``) on a transformers config before loading.

    Returns the load-time kwargs among them (``attn_implementation``). A key the config does not have is an error:
    a typo would otherwise be stored silently and change nothing.
    """
    load_kwargs: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        if key in LOAD_KWARGS:
            load_kwargs[key] = value
            continue
        if not hasattr(config, key):
            known = sorted(k for k in config.to_dict() if not k.startswith("_"))
            raise ConfigurationError(
                f"model.config_overrides {key}={value!r}: the {config.model_type!r} config of {name!r} has no "
                f"attribute {key!r}. Known attributes: {known}."
            )
        setattr(config, key, value)
    return load_kwargs


def pooling_layer_kwargs(config: Any, pooling: str) -> dict[str, Any]:
    """Skip the pooler when it is not used: its random weights would get no gradient (DDP errors)."""
    from transformers.models.auto.modeling_auto import MODEL_MAPPING  # heavy: loaded only when used

    try:
        model_cls = MODEL_MAPPING[type(config)]
    except KeyError:
        return {}
    if pooling != "pooler" and "add_pooling_layer" in inspect.signature(model_cls.__init__).parameters:
        return {"add_pooling_layer": False}
    return {}


_REPORT_ROW = re.compile(r"^(?P<key>\S+)\s*\|\s*(?:\x1b\[[0-9;]*m)?(?P<status>[A-Z_]+)")


class _UnusedPoolerReportFilter(logging.Filter):
    """Drop transformers' load report when its only finding is the pooler we chose not to build.

    ``add_pooling_layer=False`` leaves the checkpoint's ``pooler.*`` weights unused on purpose; the report calls them
    UNEXPECTED, which a user cannot act on. A report with anything else in it (missing or mismatched keys, other
    unexpected keys) is kept.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "LOAD REPORT" not in message:
            return True
        rows = [m for m in map(_REPORT_ROW.match, message.splitlines()) if m and m["key"] != "Key"]
        only_pooler = bool(rows) and all(m["status"] == "UNEXPECTED" and m["key"].startswith("pooler.") for m in rows)
        return not only_pooler


@contextlib.contextmanager
def _unused_pooler_not_reported(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    report_logger = logging.getLogger("transformers.modeling_utils")
    report_filter = _UnusedPoolerReportFilter()
    report_logger.addFilter(report_filter)
    try:
        yield
    finally:
        report_logger.removeFilter(report_filter)


def _num_features(model: nn.Module, pooling: str) -> int:
    config = model.config
    if pooling == "pooler" and getattr(model, "num_features", None):
        return int(model.num_features)
    hidden_sizes = getattr(config, "hidden_sizes", None)
    if hidden_sizes:
        return int(hidden_sizes[-1])
    return int(config.hidden_size)


def load_preprocessor(directory: Path, config: Any, modality: str, saved: dict[str, Any]) -> Any:
    """The text or image preprocessor of a transformers model folder (``saved``: its saved options)."""
    if modality == "text":
        from transformers import AutoTokenizer  # heavy: loaded only when used

        try:
            tokenizer = AutoTokenizer.from_pretrained(directory)
        except (OSError, ValueError, TypeError) as err:
            raise ConfigurationError(
                f"No tokenizer found in {str(directory)!r}; a text backbone needs one (tokenizer.json or vocab files)."
            ) from err
        max_length = saved.get("max_length", 128)
        limit = text_positions(config)
        if limit is not None and max_length > limit:
            logger.warning("max_length %d -> %d: the text encoder has %d positions", max_length, limit, limit)
            max_length = limit
        return TextPreprocessor(tokenizer, max_length=max_length)
    if "data_config" in saved:
        return ImagePreprocessor(saved["data_config"])
    try:
        from transformers import AutoImageProcessor  # heavy: loaded only when used

        processor = AutoImageProcessor.from_pretrained(directory)
        return ImagePreprocessor(data_config_from_image_processor(processor))
    except (OSError, ValueError, KeyError):
        size = int(getattr(config, "image_size", 224) or 224)
        return ImagePreprocessor({"input_size": (3, size, size), "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),
                                  "crop_pct": 1.0})
