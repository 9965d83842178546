"""Defaults shared by the API and the CLI (a leaf module: the CLI imports it without loading torch)."""

from __future__ import annotations


DEFAULT_OPSET = 17
DEFAULT_ATOL = 1e-4  # on logits, with 100% top-1 agreement; why not optimum's 1e-5: see parity.py
DEFAULT_NUM_SAMPLES = 64
# `evaluate` / `predict --backend`: auto (onnx for an export folder, else torch), torch, or an export folder run by
# onnxruntime (onnx-int8: its quantized file)
BACKENDS = ("auto", "torch", "onnx", "onnx-int8")
