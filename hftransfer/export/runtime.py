"""`OnnxClassifier`: run an export folder with onnxruntime and the preprocessing it was trained with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hftransfer.preprocessing import ImagePreprocessor, TextPreprocessor
from hftransfer.utils.io import read_json

from .errors import ExportError
from .files import INT8_FILE, ONNX_FILE, PREPROCESSOR_FILE, is_export_folder, read_labels


def require_onnxruntime() -> Any:
    try:
        import onnxruntime  # optional dependency
    except ImportError as err:
        raise ExportError("onnxruntime is not installed; install the export extra: "
                          "pip install 'hftransfer[export]'.") from err
    return onnxruntime


def create_session(path: str | Path, threads: int | None = None) -> Any:
    """A CPU onnxruntime session (all graph optimisations on)."""
    ort = require_onnxruntime()
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


@dataclass
class OnnxOutput:
    logits: torch.Tensor


class OnnxClassifier:
    """An exported folder as a classifier with the slice of `AutoTransfer`'s interface that prediction uses.

    `preprocess` rebuilds the training preprocessing from `preprocessor.json` (and the tokenizer files), so inputs
    match PyTorch's exactly; calling it with the preprocessed batch returns `logits` from onnxruntime.

    ```py
    >>> model = OnnxClassifier("exported/")
    >>> model.predict(["a fine film"], top_k=2)
    ```
    """

    training = False  # prediction code switches eval/train on torch models; an ONNX graph has no modes

    def __init__(self, folder: str | Path, quantized: bool = False, threads: int | None = None):
        self.folder = Path(folder)
        if not is_export_folder(self.folder):
            raise ExportError(f"model={str(folder)!r} is not a folder written by `hftransfer export` (it needs "
                              f"{ONNX_FILE} and labels.json); export a saved model first: hftransfer export MODEL OUT."
                              )
        file = self.folder / (INT8_FILE if quantized else ONNX_FILE)
        if not file.is_file():
            raise ExportError(f"{str(file)!r} does not exist; export with --quantize int8 to get the int8 graph.")
        self.id2label = read_labels(self.folder)
        self.label2id = {v: k for k, v in self.id2label.items()}
        self.preprocessor = _preprocessor(self.folder, read_json(self.folder / PREPROCESSOR_FILE))
        self.session = create_session(file, threads)
        self.input_names = [i.name for i in self.session.get_inputs()]

    @property
    def modality(self) -> str:
        return self.preprocessor.modality

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    def eval(self) -> OnnxClassifier:
        return self

    def train(self, mode: bool = True) -> OnnxClassifier:
        return self

    def to(self, device: Any) -> OnnxClassifier:
        return self  # onnxruntime's CPU provider: inputs are copied to numpy per call

    def transform(self, train: bool = False, augment: str | None = None) -> Any:
        """The per-image evaluation transform (PIL -> tensor), as `AutoTransfer.transform`; an export only infers."""
        if self.modality != "image":
            raise ExportError("transform() is for image exports; text exports tokenize with preprocess(texts).")
        if train:
            raise ExportError("an ONNX export runs inference only: transform(train=True) has no meaning here.")
        return self.preprocessor.transform(train=False)

    def preprocess(self, inputs: Any) -> dict[str, torch.Tensor]:
        """Images or texts -> the graph's input tensors (the preprocessing of the exported model)."""
        if self.modality == "image":
            return self.preprocessor(inputs)
        batch = self.preprocessor(inputs)
        return {name: batch[name] for name in self.input_names}

    def __call__(self, **inputs: torch.Tensor) -> OnnxOutput:
        feed = {name: _numpy(inputs[name]) for name in self.input_names}
        return OnnxOutput(logits=torch.from_numpy(self.session.run(["logits"], feed)[0]))

    def predict(self, inputs: Any, top_k: int = 1) -> list[list[dict[str, Any]]]:
        """Top-k labels with probabilities, as `AutoTransfer.predict` returns them."""
        probs = self(**self.preprocess(inputs)).logits.float().softmax(-1)
        top = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
        return [[{"label": self.id2label[int(i)], "score": float(s)} for s, i in zip(row_s, row_i)]
                for row_s, row_i in zip(top.values, top.indices)]


def _numpy(value: Any) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def _preprocessor(folder: Path, config: dict[str, Any]) -> Any:
    if config.get("type") == "image":
        return ImagePreprocessor(config["data_config"])
    if config.get("type") == "text":
        from transformers import AutoTokenizer  # heavy: loaded only when used

        return TextPreprocessor(AutoTokenizer.from_pretrained(str(folder)), max_length=config["max_length"])
    raise ExportError(f"{folder / PREPROCESSOR_FILE} has type {config.get('type')!r}; expected 'image' or 'text'. "
                      "Export the model again.")
