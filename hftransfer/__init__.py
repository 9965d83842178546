"""hftransfer: transfer learning on Hugging Face (timm + transformers) models in one command."""

from hftransfer._version import __version__
from hftransfer.backbones import list_packaged
from hftransfer.errors import install_warning_format
from hftransfer.methods import list_methods
from hftransfer.modeling import AutoTransfer, TransferOutput
from hftransfer.recipes import list_recipes


install_warning_format()  # our warnings read as messages, not as our file and line


def __getattr__(name: str):
    # The training stack (accelerate, datasets, evaluate) loads only when used.
    if name in ("train", "TrainConfig", "TransferTrainer", "TrainResult", "Callback"):
        import hftransfer.training as training

        return getattr(training, name)
    if name in ("evaluate", "predict_file", "EvaluationResult"):
        import hftransfer.inference as inference

        return getattr(inference, name)
    raise AttributeError(f"module 'hftransfer' has no attribute {name!r}")


__all__ = ["AutoTransfer", "Callback", "EvaluationResult", "TrainConfig", "TrainResult", "TransferOutput",
           "TransferTrainer", "__version__", "evaluate", "list_methods", "list_packaged", "list_recipes",
           "predict_file", "train"]
