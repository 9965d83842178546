"""The `hftransfer export` sub-command (registered by `hftransfer.cli`)."""

from __future__ import annotations

import argparse

from .api import export
from .defaults import DEFAULT_ATOL, DEFAULT_NUM_SAMPLES, DEFAULT_OPSET


def add_export_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a saved model to ONNX (parity-checked against PyTorch; optional int8)")
    p.add_argument("model", help="folder saved by hftransfer (a run's output_dir/model) or hub repo id")
    p.add_argument("output", help="export folder (written atomically; replaced when it exists)")
    p.add_argument("--format", default="onnx", choices=["onnx"])
    p.add_argument("--quantize", default=None, choices=["int8"], help="also write model.int8.onnx (onnxruntime "
                   "dynamic quantisation); its accuracy change is reported, never a failure")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset, 14-20 (default {DEFAULT_OPSET})")
    p.add_argument("--data", default=None, help="labelled data for the parity check (default: the run's recorded "
                   "validation split, else synthetic inputs)")
    p.add_argument("--label-names", default=None, help="comma-separated names of integer labels 0..K-1 in --data")
    p.add_argument("--atol", type=float, default=DEFAULT_ATOL,
                   help=f"max |delta logit| accepted (default {DEFAULT_ATOL:g}; top-1 agreement must be 100%%)")
    p.add_argument("--num-samples", type=int, default=DEFAULT_NUM_SAMPLES,
                   help=f"parity rows (default {DEFAULT_NUM_SAMPLES})")
    p.add_argument("--revision", default=None, help="model revision on the hub")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    data = args.data
    if data is not None and args.label_names:
        from hftransfer.data import DataConfig  # heavy: loads datasets

        data = DataConfig(source=data, label_names=[n.strip() for n in args.label_names.split(",")])
    result = export(args.model, args.output, format=args.format, quantize=args.quantize, opset=args.opset,
                    data=data, atol=args.atol, num_samples=args.num_samples, revision=args.revision)
    print(f"exported {args.model} to {result.output_dir}: {', '.join(result.files)}")
    print(parity_line(result.parity))
    return 0


def parity_line(parity: dict) -> str:
    onnx = parity["onnx"]
    line = (f"parity on {parity['inputs']['description']}: max |delta logit| {onnx['max_abs_logit_diff']:.2e} "
            f"(atol {parity['atol']:g}), top-1 agreement {onnx['top1_agreement']:.1%}")
    if parity.get("torch_accuracy") is not None:
        line += f", accuracy torch {parity['torch_accuracy']:.4f} / onnx {onnx['accuracy']:.4f}"
    if "int8" in parity:
        int8 = parity["int8"]
        line += (f"\nint8 ({int8['file']}): max |delta logit| {int8['max_abs_logit_diff']:.2e}, top-1 agreement "
                 f"{int8['top1_agreement']:.1%}")
        if int8["accuracy"] is not None:
            line += f", accuracy {int8['accuracy']:.4f} ({int8['accuracy_change']:+.4f} vs torch)"
    return line
