"""Per-modality defaults of the objectives: what differs between text and image backbones, in one table.

A run's objective options are, from lowest to highest: the config dataclass's defaults (what image backbones get:
unchanged since they were measured on PACS and MNIST -> USPS), then ``MODALITY_DEFAULTS[name][modality]`` once the
model's modality is known, then the user's ``objective:`` values, which always win. A bench that measures better
values changes this table only.

Text (issue 22: MiniLM on review domains, full fine-tuning): adversarial and kernel terms from the first step cost
source accuracy (DANN -7.7 points, MMD -1.0 on the target), so every objective first trains half of the steps on the
source alone, and DANN and MMD weigh their term lower. Initial choices, to be revisited with ``bench/text_da.py``.
"""

from __future__ import annotations

from typing import Any


TEXT_SOURCE_WARMUP = 0.5  # the share of steps a text run trains on the source before adapting

MODALITY_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "dann": {"text": {"source_warmup": TEXT_SOURCE_WARMUP, "weight": 0.3}},
    "mmd": {"text": {"source_warmup": TEXT_SOURCE_WARMUP, "weight": 0.3}},
    "coral": {"text": {"source_warmup": TEXT_SOURCE_WARMUP}},
    # text has no augmented second view: pseudo-labels are learned on the one (weak) view
    "self_training": {"text": {"source_warmup": TEXT_SOURCE_WARMUP, "strong_augment": None}},
}
