"""`export`: a saved hftransfer model -> an ONNX folder that runs alone, checked against PyTorch every time."""

from __future__ import annotations

import copy
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hftransfer._version import __version__
from hftransfer.modeling import AutoTransfer
from hftransfer.utils.io import atomic_directory, write_json

from .defaults import DEFAULT_ATOL, DEFAULT_NUM_SAMPLES, DEFAULT_OPSET
from .errors import ExportError, ParityError
from .files import EXPORT_FILE, INT8_FILE, ONNX_FILE, PARITY_FILE, is_export_folder, write_sidecar
from .graph import export_onnx, prepare_for_export
from .inputs import parity_inputs
from .parity import accuracy, compare, input_batches, passes, session_logits, torch_logits
from .runtime import create_session, require_onnxruntime


if TYPE_CHECKING:
    from hftransfer.data import DataConfig


FORMATS = ("onnx",)
QUANTIZATIONS = ("int8",)


@dataclass
class ExportResult:
    """Where the export went and what the parity check measured (the content of `parity.json`)."""

    output_dir: Path
    parity: dict[str, Any]
    files: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.parity["passed"])


def export(
    model: Any,
    output_dir: str | Path,
    *,
    format: str = "onnx",
    quantize: str | None = None,
    opset: int = DEFAULT_OPSET,
    data: str | Path | DataConfig | None = None,
    atol: float = DEFAULT_ATOL,
    num_samples: int = DEFAULT_NUM_SAMPLES,
    revision: str | None = None,
) -> ExportResult:
    """Export `model` to ONNX in `output_dir` and check it against PyTorch.

    Mergeable adapters (LoRA, DoRA, IA3, ...) are merged first; bottleneck adapters, prompts, prefixes and visual
    prompts export as more modules of the graph. The folder gets `model.onnx` (dynamic batch axis, and sequence axis
    for text), `preprocessor.json` (plus tokenizer files for text), `labels.json`, `README.md` with an onnxruntime
    snippet, `export.json` and `parity.json`; it is written to a temp folder and renamed, so a failed export leaves
    `output_dir` as it was.

    Args:
        model: a folder saved by hftransfer (`<output_dir>/model` of a training run), a hub id, or an `AutoTransfer`.
        output_dir: the export folder (replaced when it exists).
        format: `"onnx"` (the only format).
        quantize: `"int8"` also writes `model.int8.onnx` (onnxruntime dynamic quantisation); its accuracy and
            agreement change is reported in `parity.json`, never a failure.
        opset: ONNX opset of the graph.
        data: labelled data for the parity check (any source `hftransfer evaluate` reads, or a `DataConfig` for
            options such as `label_names` of integer labels); default: the validation split of the training run
            recorded beside the model folder, else synthetic inputs with a warning.
        atol: the largest |delta logit| accepted (top-1 agreement must also be 100%); see `parity.py` for why 1e-4.
        num_samples: parity rows (stratified by label when labels are known).

    Raises:
        ExportError: bad arguments, onnx/onnxruntime missing, or a model the tracer cannot export.
        ParityError: the ONNX logits differ from PyTorch's beyond `atol` or a top-1 label changed.
    """
    _check_arguments(format, quantize, opset, atol, num_samples)
    _check_output_dir(Path(output_dir))
    require_onnxruntime()

    folder = Path(model) if isinstance(model, (str, Path)) and Path(model).is_dir() else None
    loaded = not isinstance(model, AutoTransfer)
    if loaded:
        model = AutoTransfer.from_pretrained(model, revision=revision)
    # The reference is the model as trained (unmerged): parity then also checks the merge (peft #670).
    reference_model = (model if loaded else copy.deepcopy(model)).float().cpu().eval()
    source_method = model.method.name
    prepared, merge = prepare_for_export(reference_model)
    inputs = parity_inputs(prepared, folder, data, num_samples)
    with atomic_directory(output_dir) as tmp:
        names = export_onnx(prepared, tmp / ONNX_FILE, opset)
        batches = list(input_batches(prepared, inputs, names))
        reference = torch_logits(reference_model, batches)
        fp32 = compare(reference, session_logits(create_session(tmp / ONNX_FILE), batches), inputs.labels)
        report = {
            "inputs": {"source": inputs.source, "description": inputs.description, "num_samples": len(reference),
                       "batch_shapes": [list(s) for s in sorted({b[names[0]].shape for b in batches})]},
            "atol": atol, "top1_agreement_required": 1.0,
            "torch_accuracy": accuracy(reference, inputs.labels),
            "onnx": fp32.to_dict(),
            "passed": passes(fp32, atol),
        }
        if not report["passed"]:
            raise ParityError(
                f"the ONNX export of {model.modality} model (method {source_method!r}) does not match PyTorch on "
                f"{inputs.description}: max |delta logit| {fp32.max_abs_logit_diff:.3g} (atol {atol:g}), top-1 "
                f"agreement {fp32.top1_agreement:.2%} (100% required). Nothing was written to {str(output_dir)!r}. "
                "Try another --opset; if the difference is numerical noise on a deep model, raise --atol."
            )
        if quantize == "int8":
            _quantize_int8(tmp / ONNX_FILE, tmp / INT8_FILE)
            int8 = compare(reference, session_logits(create_session(tmp / INT8_FILE), batches), inputs.labels)
            report["int8"] = {**int8.to_dict(), "file": INT8_FILE, "accuracy_change": (
                None if int8.accuracy is None else int8.accuracy - report["torch_accuracy"])}
        write_sidecar(tmp, prepared)
        write_json(tmp / PARITY_FILE, report)
        write_json(tmp / EXPORT_FILE, _provenance(prepared, model, source_method, merge, opset, names, folder))
        files = sorted(p.name for p in tmp.iterdir())
    return ExportResult(Path(output_dir), report, files)


def _check_output_dir(output_dir: Path) -> None:
    """Refuse to replace anything but an earlier export (a saved model folder, a file, an unrelated folder)."""
    if output_dir.exists() and not output_dir.is_dir():
        raise ExportError(f"OUT={str(output_dir)!r} is a file; give a folder path for the export.")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not is_export_folder(output_dir):
        raise ExportError(f"OUT={str(output_dir)!r} exists and is not an earlier export (no {ONNX_FILE} and "
                          "labels.json); it is never replaced. Pick a new folder or remove it first.")


def _check_arguments(format: str, quantize: str | None, opset: int, atol: float, num_samples: int) -> None:
    if format not in FORMATS:
        raise ExportError(f"--format {format!r} is not supported; use one of {list(FORMATS)}.")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ExportError(f"--quantize {quantize!r} is not supported; use one of {list(QUANTIZATIONS)} or leave it "
                          "out.")
    if isinstance(opset, bool) or not isinstance(opset, int) or not 14 <= opset <= 20:
        raise ExportError(f"--opset {opset!r} must be an integer from 14 to 20 (default {DEFAULT_OPSET}).")
    if isinstance(atol, bool) or not isinstance(atol, (int, float)) or not atol > 0:
        raise ExportError(f"--atol {atol!r} must be a positive number (default {DEFAULT_ATOL:g}).")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 2:
        raise ExportError(f"num_samples={num_samples!r} must be an integer >= 2 (parity needs a real batch).")


def _quantize_int8(source: Path, target: Path) -> None:
    """Dynamic int8: weights int8 ahead of time, activations quantised per batch (onnxruntime's CPU path)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic  # optional dependency

    # Convolutions stay fp32. Measured on EfficientNet-Lite0 / hymenoptera val (onnxruntime 1.32, 1 thread):
    # quantising them too (ConvInteger) ran ~8x slower than fp32 and lost 2 points of accuracy (0.941 -> 0.922).
    # Dynamic quantisation pays off in the MatMul/Gemm of transformers and heads.
    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])


def _provenance(prepared: Any, original: Any, source_method: str, merge: str, opset: int, names: list[str],
                folder: Path | None) -> dict[str, Any]:
    import onnx  # optional dependency


    return {
        "format": "onnx", "opset": opset, "exporter": "torch.onnx.export(dynamo=False)",
        "inputs": names, "outputs": ["logits"], "modality": prepared.modality,
        "source_model": str(folder) if folder is not None else original.backbone.spec.name,
        "backbone": original.backbone.spec.name, "method": source_method, "merged": merge == "merged", "merge": merge,
        "exported_method": prepared.method.name,
        "versions": {"hftransfer": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
                     "onnxruntime": require_onnxruntime().__version__, "python": platform.python_version()},
    }
