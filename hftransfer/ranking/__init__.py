"""Rank candidate backbones on your data before training: transferability metrics on cached frozen features.

    hftransfer rank ../shared/data/hymenoptera --kfold \\
        --candidates packaged:efficientnet_lite0,packaged:efficientnet_lite1,random:timm:efficientnet_lite0

    >>> result = hftransfer.rank("sklearn_digits", ["packaged:efficientnet_lite0", "random:timm:efficientnet_lite0"])
    >>> result.recommendation, result.confidence

Writes rank.json, rank.md (a table for a model card) and rank.png (ranks per metric, average rank) to ``output_dir``;
features are cached in ``output_dir/features`` in the linear-probe cache format (see :mod:`.features`).
"""

from hftransfer.ranking.features import Candidate
from hftransfer.ranking.rank import RankResult, rank


__all__ = ["Candidate", "RankResult", "rank"]
