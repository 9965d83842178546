"""Transfer methods (one module each) and their registry."""

# Registration: importing a method module registers it.
from hftransfer.methods import (  # noqa: F401  # noqa: F401
    adapter,
    boft,
    full,
    ia3,
    linear_probe,
    loha,
    lokr,
    lora,
    lp_ft,
    oft,
    p_tuning,
    prefix_tuning,
    prompt_tuning,
    vera,
    vpt,
)
from hftransfer.methods.base import MethodConfig, TransferMethod
from hftransfer.methods.registry import METHODS, get_method, list_methods, register_method


__all__ = ["METHODS", "MethodConfig", "TransferMethod", "get_method", "list_methods", "register_method"]
