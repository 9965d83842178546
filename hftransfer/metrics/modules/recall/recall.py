# Copyright 2025 The hftransfer Authors. Licensed under the Apache License, Version 2.0.
"""Recall: a local `evaluate` metric, loadable offline with `evaluate.load("path/to/recall")`."""

import datasets
import evaluate
from sklearn.metrics import recall_score


# Each module is copied on its own into evaluate's module cache, so it cannot import shared helpers.
_AVERAGES = ("macro", "micro", "weighted", "binary")

_DESCRIPTION = """
Recall is the fraction of actual positives that are found: Recall = TP / (TP + FN).
For multi-class data the per-class scores are averaged: `macro` (unweighted mean over classes), `micro` (global
counts) or `weighted` (mean weighted by each class's support). `binary` reports the score of `pos_label` only.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): Predicted class ids.
    references (`list` of `int`): Ground truth class ids.
    average (`str`, *optional*, defaults to `"macro"`): One of `"macro"`, `"micro"`, `"weighted"`, `"binary"`.
    labels (`list` of `int`, *optional*): The classes to average over. Defaults to every class present in
        `references` or `predictions`; pass `list(range(num_classes))` to count absent classes as 0.
    pos_label (`int`, *optional*, defaults to 1): The positive class when `average="binary"`.
    sample_weight (`list` of `float`, *optional*): Sample weights.
    zero_division (`float`, *optional*, defaults to 0.0): Value used for a class whose score is 0/0
        (scikit-learn would warn and use 0 too).

Returns:
    recall (`float`): In [0, 1].

Examples:
    >>> recall = evaluate.load("hftransfer/metrics/modules/recall")
    >>> recall.compute(references=[0, 1, 2, 0], predictions=[0, 1, 1, 0], average="macro")
    {'recall': 0.6666666666666666}
"""

_CITATION = """
@article{scikit-learn,
  title={Scikit-learn: Machine Learning in {P}ython},
  author={Pedregosa, F. and Varoquaux, G. and Gramfort, A. and Michel, V. and Thirion, B. and Grisel, O. and
          Blondel, M. and Prettenhofer, P. and Weiss, R. and Dubourg, V. and Vanderplas, J. and Passos, A. and
          Cournapeau, D. and Brucher, M. and Perrot, M. and Duchesnay, E.},
  journal={Journal of Machine Learning Research},
  volume={12},
  pages={2825--2830},
  year={2011}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Recall(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.recall_score.html"],
        )

    def _compute(
        self, predictions, references, average="macro", labels=None, pos_label=1, sample_weight=None, zero_division=0.0
    ):
        if average not in _AVERAGES:
            raise ValueError(
                f"`average` must be one of {_AVERAGES}, got {average!r}. Use 'macro' for multi-class data."
            )
        score = recall_score(
            references,
            predictions,
            labels=labels,
            pos_label=pos_label,
            average=average,
            sample_weight=sample_weight,
            zero_division=zero_division,
        )
        return {"recall": float(score)}
