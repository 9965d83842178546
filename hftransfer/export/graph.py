"""PyTorch -> ONNX: merge what merges, wrap the model in a fixed-signature module, trace with dynamic axes.

Exporter choice (torch 2.14, measured on the tiny test models): the TorchScript exporter (`dynamo=False`) exports
every method, prefix tuning included, in 0.1-0.7 s; the dynamo exporter (`torch.export`, needs onnxscript) takes
2-5 s and fails on prefix tuning (`torch.export` cannot guard on the data-dependent left-padding check in
`backbones/transformers_tokens.py`). Tracing records Python branches as taken for the dummy batch, so the dummy text
batch is padded (both mask paths exist in BERT-family code) and every export is checked against PyTorch on other
batch sizes and lengths (parity.py).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hftransfer.errors import ConfigurationError

from .defaults import DEFAULT_OPSET
from .errors import ExportError


TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
DUMMY_TEXTS = ("an export dummy sentence long enough to pad the other one", "short")


class _ImageGraph(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


class _TextGraph(nn.Module):
    def __init__(self, model: nn.Module, input_names: tuple[str, ...]):
        super().__init__()
        self.model = model
        self.input_names = input_names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.input_names, inputs))).logits


def prepare_for_export(model: Any) -> tuple[Any, str]:
    """An eval-mode fp32 CPU copy of `model` with mergeable adapters merged; returns (copy, what happened)."""
    source_method = model.method.name
    model = copy.deepcopy(model).float().cpu().eval()
    try:
        model.merge_adapters()  # LoRA/DoRA/IA3/LoHa/LoKr/OFT/BOFT fold into the weights
    except ConfigurationError as err:  # bottleneck adapters, prompts, prefixes, VPT: more modules of the graph
        return model, f"not merged, exported as extra graph modules: {err}"
    if source_method != "full" and model.method.name == "full":
        return model, "merged"
    return model, "nothing to merge"


def dummy_inputs(model: Any) -> dict[str, torch.Tensor]:
    """A batch of 2 for tracing: zeros at the model's image size, or a right-padded text batch."""
    if model.modality == "image":
        size = tuple(model.preprocessor.data_config["input_size"])
        return {"pixel_values": torch.zeros(2, *size)}
    batch = model.backbone.select_inputs(dict(model.preprocess(list(DUMMY_TEXTS))))
    return {name: batch[name] for name in TEXT_INPUTS if name in batch}


def export_onnx(model: Any, path: Path, opset: int = DEFAULT_OPSET) -> list[str]:
    """Trace `model` (already prepared) into `path`; returns the graph's input names."""
    inputs = dummy_inputs(model)
    names = tuple(inputs)
    if model.modality == "image":
        graph: nn.Module = _ImageGraph(model)
        axes = {"pixel_values": {0: "batch"}}
    else:
        graph = _TextGraph(model, names)
        axes = {name: {0: "batch", 1: "sequence"} for name in names}
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # TracerWarnings on shape arithmetic; parity checks the result instead
            torch.onnx.export(graph.eval(), tuple(inputs.values()), str(path), input_names=list(names),
                              output_names=["logits"], dynamic_axes={**axes, "logits": {0: "batch"}},
                              opset_version=opset, dynamo=False, do_constant_folding=True)
    except Exception as err:  # noqa: BLE001  (the tracer raises RuntimeError, TypeError, torch.onnx errors, ...)
        raise ExportError(
            f"torch.onnx.export could not trace this {model.modality} model (method {model.method.name!r}, opset "
            f"{opset}): {type(err).__name__}: {err}. Try another --opset (17 is the default; 14-20 are supported)."
        ) from err
    import onnx  # optional dependency

    return [i.name for i in onnx.load(str(path), load_external_data=False).graph.input]
