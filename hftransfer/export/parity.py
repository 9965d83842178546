"""Parity of an exported graph with PyTorch: max |delta logit|, top-1 agreement and accuracies on the same batches.

Tolerance: optimum validates with `atol=1e-5` and users hit it on healthy exports ("max diff = 2.67e-05"): ORT's
fused fp32 kernels (GEMM, attention, convolution algorithms) sum in another order than PyTorch, and the rounding
grows with depth and logit scale. hftransfer's default is `1e-4` on the logits *plus* 100% top-1 agreement: 1e-4 is
still far below any change that moves a probability visibly, and the agreement check is the decision-level test
that a real export bug (a wrong branch traced, an adapter dropped, a broken dynamic axis) fails at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from .inputs import ParityInputs


PARITY_BATCH_SIZE = 16


@dataclass
class Comparison:
    """One graph's outputs against PyTorch's on the parity inputs."""

    max_abs_logit_diff: float
    top1_agreement: float  # fraction of rows with the same argmax
    accuracy: float | None  # of this graph, when labels are known

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def input_batches(model: Any, inputs: ParityInputs, names: Sequence[str],
                  batch_size: int = PARITY_BATCH_SIZE) -> Iterator[dict[str, np.ndarray]]:
    """The preprocessed batches (exactly the graph's inputs), preprocessed the way `model.preprocess` does it."""
    for start in range(0, len(inputs.values), batch_size):
        values = inputs.values[start:start + batch_size]
        if model.modality == "image":
            batch = model.preprocess(values)
        else:
            pairs = inputs.pairs[start:start + batch_size] if inputs.pairs is not None else None
            batch = model.tokenize(values, text_pair=pairs)
        yield {name: batch[name].numpy() for name in names}


@torch.no_grad()
def torch_logits(model: Any, batches: Sequence[dict[str, np.ndarray]]) -> np.ndarray:
    model.eval()
    return np.concatenate([model(**{k: torch.from_numpy(v) for k, v in b.items()}).logits.float().numpy()
                           for b in batches])


def session_logits(session: Any, batches: Sequence[dict[str, np.ndarray]]) -> np.ndarray:
    return np.concatenate([session.run(["logits"], b)[0] for b in batches]).astype(np.float32)


def compare(reference: np.ndarray, logits: np.ndarray, labels: np.ndarray | None) -> Comparison:
    accuracy = None if labels is None else float((logits.argmax(-1) == labels).mean())
    return Comparison(max_abs_logit_diff=float(np.abs(reference - logits).max()),
                      top1_agreement=float((reference.argmax(-1) == logits.argmax(-1)).mean()), accuracy=accuracy)


def accuracy(logits: np.ndarray, labels: np.ndarray | None) -> float | None:
    return None if labels is None else float((logits.argmax(-1) == labels).mean())


def passes(comparison: Comparison, atol: float) -> bool:
    return comparison.max_abs_logit_diff <= atol and comparison.top1_agreement == 1.0
