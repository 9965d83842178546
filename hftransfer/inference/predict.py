"""Batched top-k prediction over many inputs into a CSV or JSONL file, one row per input (errors included)."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import torch
from tqdm.auto import tqdm

from hftransfer.data.errors import DataError
from hftransfer.export.defaults import BACKENDS
from hftransfer.export.files import is_export_folder
from hftransfer.export.runtime import OnnxClassifier
from hftransfer.modeling import AutoTransfer
from hftransfer.utils.compile import compile_for_inference

from .inputs import InputRow, collect_inputs, open_image
from .precision import autocast, resolve_precision


OUTPUT_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def _output_format(output: str | Path | None) -> str | None:
    if output is None:
        return None
    suffix = Path(output).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise DataError(f"--output {str(output)!r} must end in {sorted(OUTPUT_FORMATS)} (CSV or JSON Lines).")
    if Path(output).is_dir():
        raise DataError(f"--output {str(output)!r} is a folder; give a file name such as predictions.csv.")
    return OUTPUT_FORMATS[suffix]


def _batches(rows: Sequence[InputRow], size: int) -> Iterator[Sequence[InputRow]]:
    for start in range(0, len(rows), size):
        yield rows[start:start + size]


@torch.no_grad()
def predict_rows(model: Any, rows: Sequence[InputRow], top_k: int = 1, batch_size: int = 32, precision: str = "auto",
                 progress_bar: bool = True, compile: bool = False,
                 ) -> Iterator[tuple[InputRow, list[dict[str, Any]] | None]]:
    """Yield `(row, predictions)` in input order; `predictions` is None for rows that could not be read.

    `compile=True` compiles `model` in place (`torch.compile`, dynamic shapes) before the first batch; where it cannot
    apply, the reason goes to stderr and prediction runs eagerly."""
    device = next(model.parameters()).device if isinstance(model, torch.nn.Module) else torch.device("cpu")  # ONNX
    mode = resolve_precision(precision, device)
    if compile:
        compile_for_inference(model, device)
    was_training = model.training
    model.eval()
    k = min(top_k, model.num_labels)
    bar = tqdm(total=len(rows), desc="predict", unit="input", disable=not progress_bar, file=sys.stderr)
    try:
        for batch in _batches(rows, batch_size):
            values, ready = [], []
            for row in batch:
                if row.error is None and model.modality == "image":
                    image, row.error = open_image(row.value)
                    if image is not None:
                        values.append(image)
                elif row.error is None:
                    values.append(row.value)
                if row.error is None:
                    ready.append(row)
            results: dict[int, list[dict[str, Any]]] = {}
            if values:
                try:
                    predictions = _top_k(model, values, k, mode, device)
                except (RuntimeError, ValueError, TypeError, OSError):
                    predictions = []  # one bad input spoils the batch: redo it row by row to find it
                    for row, value in zip(ready, values):
                        try:
                            predictions += _top_k(model, [value], k, mode, device)
                        except (RuntimeError, ValueError, TypeError, OSError) as err:
                            row.error = f"cannot preprocess {row.source!r}: {type(err).__name__}: {err}"
                            predictions.append(None)
                for row, preds in zip(ready, predictions):
                    if preds is not None:
                        results[id(row)] = preds
            for row in batch:
                yield row, results.get(id(row))
            bar.update(len(batch))
    finally:
        bar.close()
        model.train(was_training)


def _top_k(model: Any, values: list[Any], k: int, mode: str, device: torch.device) -> list[list[dict[str, Any]]]:
    inputs = {key: value.to(device) for key, value in model.preprocess(values).items()}
    with autocast(mode, device):
        logits = model(**inputs).logits
    top = logits.float().softmax(-1).topk(k, dim=-1)
    return [[{"label": model.id2label[i], "score": s} for s, i in zip(scores, ids)]
            for scores, ids in zip(top.values.tolist(), top.indices.tolist())]


def _csv_header(top_k: int) -> list[str]:
    return ["row", "input", *[f"{kind}_{i}" for i in range(1, top_k + 1) for kind in ("label", "score")], "error"]


def _csv_line(index: int, row: InputRow, preds: list[dict[str, Any]] | None, top_k: int) -> list[Any]:
    cells: list[Any] = []
    for i in range(top_k):
        pred = preds[i] if preds and i < len(preds) else None
        cells += [pred["label"], f"{pred['score']:.6f}"] if pred else ["", ""]
    return [index, row.source, *cells, row.error or ""]


def load_model_for_inference(model: str | Path, backend: str, revision: str | None, compile: bool) -> Any:
    """An `AutoTransfer`, or an `OnnxClassifier` for `backend` onnx/onnx-int8 and (auto) for an export folder."""
    if backend not in BACKENDS:
        raise DataError(f"--backend {backend!r} is not one of {list(BACKENDS)}.")
    if backend.startswith("onnx") or (backend == "auto" and is_export_folder(model)):
        if compile:
            raise DataError("--compile is for the torch backend; an ONNX export is already a compiled graph.")

        return OnnxClassifier(model, quantized=backend == "onnx-int8")

    return AutoTransfer.from_pretrained(model, revision=revision)


def predict_file(
    model: Any,
    inputs: str | Sequence[str],
    output: str | Path | None = None,
    *,
    top_k: int = 1,
    batch_size: int = 32,
    text_column: str = "text",
    image_column: str = "image",
    precision: str = "auto",
    progress_bar: bool = True,
    revision: str | None = None,
    stdin: TextIO | None = None,
    compile: bool = False,
    backend: str = "auto",
) -> list[dict[str, Any]]:
    """Predict every input of a folder, table, text file, stdin (`"-"`) or list of files/sentences.

    Args:
        model: an `AutoTransfer`, a folder saved by hftransfer or a hub id.
        inputs: one INPUT or several: image files or folders (image models); CSV/TSV/JSONL/Parquet tables (column
            `text_column`, or `image_column` of image paths relative to the table); `.txt` files (one text or
            image path per line); `"-"` for stdin lines; sentences (text models).
        output: `.csv` or `.jsonl` file, written atomically; None returns the rows only.
        top_k: labels per row, best first. precision: `"auto"` (bf16 on CPUs with AMX/AVX512-BF16 and on GPUs that
            support it), `"bf16"` or `"fp32"`. compile: `torch.compile` the model first (pays off on large inputs;
            the compile time is spent once, before the first batch).
        backend: `"torch"`, `"onnx"` / `"onnx-int8"` (a folder written by `hftransfer export`, run by onnxruntime
            with the same preprocessing), or `"auto"`: onnx for an export folder, else torch.

    Returns:
        One dict per input, in order: `{"row", "input", "predictions": [{"label", "score"}, ...], "error"}`. Rows that
        could not be read (missing or corrupt image, empty text) have `predictions=[]` and an `error`.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise DataError(f"--top-k {top_k!r} must be a positive integer.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise DataError(f"--batch-size {batch_size!r} must be a positive integer.")
    fmt = _output_format(output)
    if not hasattr(model, "predict"):
        model = load_model_for_inference(model, backend, revision, compile)
        precision = "fp32" if not isinstance(model, torch.nn.Module) else precision
    rows = collect_inputs([inputs] if isinstance(inputs, (str, Path)) else list(inputs), model.modality,
                          text_column=text_column, image_column=image_column, stdin=stdin)
    k = min(top_k, model.num_labels)
    out: list[dict[str, Any]] = []
    buffer = io.StringIO()
    writer = csv.writer(buffer) if fmt == "csv" else None
    if writer is not None:
        writer.writerow(_csv_header(k))
    for index, (row, preds) in enumerate(predict_rows(model, rows, k, batch_size, precision, progress_bar, compile)):
        record = {"row": index, "input": row.source, "predictions": preds or [], "error": row.error}
        out.append(record)
        if writer is not None:
            writer.writerow(_csv_line(index, row, preds, k))
        elif fmt == "jsonl":
            buffer.write(json.dumps(record, ensure_ascii=False) + "\n")
    if output is not None:
        path = Path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(buffer.getvalue(), encoding="utf-8")
        os.replace(tmp, path)
    return out
