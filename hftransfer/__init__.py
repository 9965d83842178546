"""hftransfer: transfer learning on Hugging Face (timm + transformers) models in one command."""

import importlib

from hftransfer._version import __version__
from hftransfer.backbones import list_packaged
from hftransfer.compare import compare  # binds the function over its module's name: hftransfer.compare(...)
from hftransfer.demo.app import demo  # (gradio loads lazily) hftransfer.demo(...)
from hftransfer.errors import install_warning_format
from hftransfer.export.api import export  # binds the function over its package's name: hftransfer.export(...)
from hftransfer.methods import list_methods
from hftransfer.modeling import AutoTransfer, TransferOutput
from hftransfer.recipes import list_recipes


install_warning_format()  # our warnings read as messages, not as our file and line


def __getattr__(name: str):
    # The training stack (accelerate, datasets, evaluate) loads only when used.
    if name in ("train", "TrainConfig", "TransferTrainer", "TrainResult", "Callback"):
        import hftransfer.training as training  # heavy: accelerate, datasets, timm (the training stack)

        return getattr(training, name)
    if name in ("evaluate", "predict_file", "EvaluationResult"):
        import hftransfer.inference as inference  # heavy: datasets, PIL (the data loaders)

        return getattr(inference, name)
    if name in ("interpolate", "soup", "InterpolationResult", "SoupResult"):
        import hftransfer.robust as robust  # heavy: robust + metrics modules, only when used

        return getattr(robust, name)
    if name in ("ExportResult", "OnnxClassifier"):
        return getattr(importlib.import_module("hftransfer.export"), name)
    if name in ("pull", "PullResult"):  # hub downloads: huggingface_hub loads only when used
        import hftransfer.hub.pull as hub_pull  # heavy: hub download code, only when used

        return getattr(hub_pull, name)
    if name in ("rank", "RankResult"):
        import hftransfer.ranking as ranking  # heavy: ranking features + metrics, only when used

        return getattr(ranking, name)
    raise AttributeError(f"module 'hftransfer' has no attribute {name!r}")


__all__ = ["AutoTransfer", "Callback", "EvaluationResult", "TrainConfig", "TrainResult", "TransferOutput",
           "TransferTrainer", "__version__", "evaluate", "list_methods", "list_packaged", "list_recipes",
           "predict_file", "train"]
__all__ += ["InterpolationResult", "SoupResult", "interpolate", "soup"]
__all__ += ["ExportResult", "OnnxClassifier", "demo", "export"]
__all__ += ["RankResult", "rank"]
__all__ += ["compare"]
__all__ += ["PullResult", "pull"]
