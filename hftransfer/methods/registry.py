"""The method registry: name -> config class, method class and the training defaults that suit the method.

One registration per method: ``@register_method("lora", LoraMethodConfig, defaults={...})`` next to the method class
is all a method needs to be trainable as ``recipe: lora`` (a recipe is named after its method; ``hftransfer.recipes``
reads these entries). The method's own options and their defaults live in its config dataclass only.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hftransfer.errors import ConfigurationError, HFTransferError
from hftransfer.methods.base import MethodConfig, TransferMethod
from hftransfer.utils.modalities import MODALITIES  # family_defaults is keyed by these


if TYPE_CHECKING:
    from hftransfer.modeling import AutoTransfer


# What family_defaults may set: values resolved after the data (and so the modality) is known, before the model is
# built. Settings the accelerator, the data or the output folder depend on are fixed earlier, so they are not here.
FAMILY_KEYS = ("method", "optim", "scheduler", "epochs", "augment", "label_smoothing", "max_grad_norm",
               "mixup_alpha", "cutmix_alpha", "early_stopping_patience")
DEFAULT_EXAMPLE_MODEL = "packaged:all-MiniLM-L6-v2"


@dataclass(frozen=True)
class MethodEntry:
    name: str
    config_cls: type[MethodConfig]
    method_cls: type[TransferMethod]
    description: str  # the first line of the method class's docstring
    # TrainConfig values that suit the method (``recipe: <name>`` fills them in; the user's config overrides them).
    defaults: dict[str, Any] = field(default_factory=dict)
    # Per backbone family ("text" / "image"), TrainConfig values layered over ``defaults`` (the user's still win).
    family_defaults: dict[str, dict[str, Any]] = field(default_factory=dict)
    example_model: str = DEFAULT_EXAMPLE_MODEL  # the backbone `hftransfer recipes` shows in the example config

    @property
    def method(self) -> str:
        """The method ``recipe: <name>`` trains: the recipe is named after it (read as a recipe, see get_recipe)."""
        return self.name

    def defaults_for(self, modality: str | None) -> dict[str, Any]:
        """The training defaults for a backbone of ``modality`` (None: the family-independent ones only)."""
        return deep_merge(copy.deepcopy(self.defaults), copy.deepcopy(self.family_defaults.get(modality or "", {})))


METHODS: dict[str, MethodEntry] = {}


def register_method(name: str, config_cls: type[MethodConfig], *, defaults: dict[str, Any] | None = None,
                    family_defaults: dict[str, dict[str, Any]] | None = None,
                    example_model: str = DEFAULT_EXAMPLE_MODEL):
    """Class decorator: ``@register_method("lora", LoraMethodConfig, defaults={"optim": {"lr": 1e-3}})``.

    ``defaults``: the training hyperparameters (TrainConfig values) that suit the method; ``family_defaults``: per
    backbone family (``text`` / ``image``), what differs from them (only :data:`FAMILY_KEYS`); ``example_model``: a
    backbone the method works on, for the listing. Do not restate the config dataclass's defaults here.
    """
    if name != name.lower() or not name.isidentifier():
        raise ConfigurationError(f"Method name {name!r} must be a lowercase identifier.")
    family_defaults = family_defaults or {}
    unknown = sorted(set(family_defaults) - set(MODALITIES))
    if unknown:
        raise ConfigurationError(f"Method {name!r}: family_defaults keys {unknown} must be among {list(MODALITIES)}.")
    for modality, values in family_defaults.items():
        bad = sorted(set(values) - set(FAMILY_KEYS))
        if bad:
            raise ConfigurationError(f"Method {name!r}: family_defaults[{modality!r}] sets {bad}; only {FAMILY_KEYS} "
                                     "may depend on the backbone family.")
    for where, values in [("defaults", defaults or {}), *((f"family_defaults[{m!r}]", v)
                                                          for m, v in family_defaults.items())]:
        _check_method_defaults(name, config_cls, where, values.get("method") or {})

    def wrap(method_cls: type[TransferMethod]) -> type[TransferMethod]:
        if name in METHODS:
            raise ConfigurationError(
                f"Method {name!r} is already registered by {METHODS[name].method_cls.__module__}."
            )
        method_cls.name = name
        doc = (method_cls.__doc__ or "").strip().splitlines()
        METHODS[name] = MethodEntry(name, config_cls, method_cls, doc[0] if doc else "", dict(defaults or {}),
                                    dict(family_defaults), example_model)
        return method_cls

    return wrap


def _check_method_defaults(name: str, config_cls: type[MethodConfig], where: str, options: dict[str, Any]) -> None:
    """Method options in training defaults must exist and differ from the config dataclass's own default."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    for key, value in options.items():
        if key not in fields:
            raise ConfigurationError(f"Method {name!r}: {where} sets method.{key}, which {config_cls.__name__} does "
                                     f"not have; its options are {sorted(fields)}.")
        f = fields[key]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if value == default:
            raise ConfigurationError(f"Method {name!r}: {where} restates method.{key}={value!r}, the default of "
                                     f"{config_cls.__name__}; delete it there (a default lives in one place).")


def list_methods() -> list[str]:
    return sorted(METHODS)


def get_method(name: str, config: dict[str, Any] | MethodConfig | None = None) -> TransferMethod:
    if name not in METHODS:
        raise ConfigurationError(f"Unknown method {name!r}. Valid methods: {', '.join(list_methods())}.")
    entry = METHODS[name]
    if not isinstance(config, MethodConfig):
        config = entry.config_cls.from_dict(config)
    return entry.method_cls(config)


def working_methods(model: AutoTransfer, exclude: str = "") -> list[str]:
    """Registered methods whose pre-flight :meth:`~TransferMethod.check_backbone` accepts ``model`` (for hints)."""
    global _probing
    if _probing:  # a refusal inside this probe must not probe again
        return []
    names = []
    _probing = True
    try:
        for name in list_methods():
            if name == exclude:
                continue
            try:
                get_method(name).check_backbone(model)
            except (HFTransferError, ValueError, TypeError):
                continue
            names.append(name)
    finally:
        _probing = False
    return names


_probing = False


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` merged into ``base`` (in place), nested dicts key by key; returns ``base``."""
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = deep_merge(base[key], value)
        else:
            base[key] = value
    return base
