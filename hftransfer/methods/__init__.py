"""Transfer methods (one module each) and their registry."""

# Registration: importing a method module registers it.
from hftransfer.methods import adapter, boft, full, ia3, linear_probe, loha, lokr, lora, oft, vera  # noqa: F401
from hftransfer.methods import p_tuning, prefix_tuning, prompt_tuning, vpt  # noqa: F401
from hftransfer.methods.base import MethodConfig, TransferMethod
from hftransfer.methods.registry import METHODS, get_method, list_methods, register_method


__all__ = ["METHODS", "MethodConfig", "TransferMethod", "get_method", "list_methods", "register_method"]
