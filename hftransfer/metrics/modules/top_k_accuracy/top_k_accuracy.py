# Copyright 2025 The hftransfer Authors. Licensed under the Apache License, Version 2.0.
"""Top-k accuracy: a local `evaluate` metric, loadable offline with `evaluate.load("path/to/top_k_accuracy")`."""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import accuracy_score, top_k_accuracy_score


_DESCRIPTION = """
Top-k accuracy is the fraction of samples whose true class is among the `k` classes with the highest scores.
With `k=1` it equals accuracy. Scores can be logits or probabilities (only their order matters).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): One score (logit or probability) per class for each sample,
        shape (n_samples, n_classes).
    references (`list` of `int`): Ground truth class ids.
    k (`int`, *optional*, defaults to 5): Number of highest-scoring classes that count as a hit.
    labels (`list` of `int`, *optional*): The class id of each score column. Defaults to
        `range(n_classes)`, so `references` need not contain every class.
    normalize (`bool`, *optional*, defaults to `True`): If `False`, return the number of hits.
    sample_weight (`list` of `float`, *optional*): Sample weights.

Returns:
    top_k_accuracy (`float` or `int`): In [0, 1] if `normalize=True`, else the number of hits. `k >= n_classes`
        gives a perfect score.

Examples:
    >>> top_k = evaluate.load("hftransfer/metrics/modules/top_k_accuracy")
    >>> top_k.compute(references=[0, 2], predictions=[[0.5, 0.3, 0.2], [0.5, 0.3, 0.2]], k=2)
    {'top_k_accuracy': 0.5}
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
class TopKAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float64")),
                    "references": datasets.Value("int64"),
                }
            ),
            reference_urls=[
                "https://scikit-learn.org/stable/modules/generated/sklearn.metrics.top_k_accuracy_score.html"
            ],
        )

    def _compute(self, predictions, references, k=5, labels=None, normalize=True, sample_weight=None):
        scores = np.asarray(predictions, dtype=np.float64)
        if scores.ndim != 2:
            raise ValueError(
                f"`predictions` must hold one score vector per sample (shape (n_samples, n_classes)), got shape "
                f"{scores.shape}. Pass logits or probabilities, not argmax class ids."
            )
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise ValueError(f"`k` must be a positive integer, got {k!r}.")
        if labels is None:
            labels = list(range(scores.shape[1]))
        if scores.shape[1] == 2:
            # scikit-learn reads two columns as a binary problem and thresholds a single score column, which is only
            # right for probabilities. With two classes top-1 is argmax accuracy and top-2 always hits.
            top1 = np.asarray(labels)[scores.argmax(axis=1)]
            hits_as_predictions = top1 if k == 1 else np.asarray(references)
            score = accuracy_score(references, hits_as_predictions, normalize=normalize, sample_weight=sample_weight)
        else:
            score = top_k_accuracy_score(
                references, scores, k=k, labels=labels, normalize=normalize, sample_weight=sample_weight
            )
        return {"top_k_accuracy": float(score) if normalize or sample_weight is not None else int(score)}
