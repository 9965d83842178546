"""The method registry: name -> (config class, method class)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hftransfer.errors import ConfigurationError
from hftransfer.methods.base import MethodConfig, TransferMethod


if TYPE_CHECKING:
    from hftransfer.modeling import AutoTransfer


@dataclass(frozen=True)
class MethodEntry:
    name: str
    config_cls: type[MethodConfig]
    method_cls: type[TransferMethod]
    description: str


METHODS: dict[str, MethodEntry] = {}


def register_method(name: str, config_cls: type[MethodConfig]):
    """Class decorator: ``@register_method("lora", LoraMethodConfig)``."""

    def wrap(method_cls: type[TransferMethod]) -> type[TransferMethod]:
        if name != name.lower() or not name.isidentifier():
            raise ConfigurationError(f"Method name {name!r} must be a lowercase identifier.")
        if name in METHODS:
            raise ConfigurationError(
                f"Method {name!r} is already registered by {METHODS[name].method_cls.__module__}."
            )
        method_cls.name = name
        doc = (method_cls.__doc__ or "").strip().splitlines()
        METHODS[name] = MethodEntry(name, config_cls, method_cls, doc[0] if doc else "")
        return method_cls

    return wrap


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
    from hftransfer.errors import HFTransferError

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
