"""The exceptions and warning `hftransfer export` raises."""

from __future__ import annotations

from hftransfer.errors import HFTransferError, HFTransferWarning


class ExportError(HFTransferError, ValueError):
    """An export that cannot start or finish (bad argument, missing onnx/onnxruntime, a graph torch cannot trace)."""


class ParityError(HFTransferError, AssertionError):
    """The exported graph's logits differ from PyTorch's beyond the tolerance, or a top-1 label changed."""


class ExportWarning(HFTransferWarning):
    """The export works but was checked less well than it could be (synthetic parity inputs)."""
