"""hftransfer: transfer learning on Hugging Face (timm + transformers) models in one command."""

from hftransfer._version import __version__
from hftransfer.backbones import list_packaged
from hftransfer.methods import list_methods
from hftransfer.modeling import AutoTransfer, TransferOutput


__all__ = ["AutoTransfer", "TransferOutput", "__version__", "list_methods", "list_packaged"]
