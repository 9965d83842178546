"""Transfer methods (one module each) and their registry."""

from hftransfer.methods import full, linear_probe, lora  # noqa: F401  (registration)
from hftransfer.methods import p_tuning, prefix_tuning, prompt_tuning, vpt  # noqa: F401  (registration)
from hftransfer.methods.base import MethodConfig, TransferMethod
from hftransfer.methods.registry import METHODS, get_method, list_methods, register_method


__all__ = ["METHODS", "MethodConfig", "TransferMethod", "get_method", "list_methods", "register_method"]
