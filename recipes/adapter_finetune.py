"""Bottleneck adapters (transformers) / residual conv adapters (CNNs) on a frozen backbone plus a trained head.

Runs on one CPU/GPU or many processes with the same config:

    python recipes/adapter_finetune.py --config recipes/configs/<config>.yaml [key=value ...]
    accelerate launch --multi_gpu --num_processes 2 recipes/adapter_finetune.py --config recipes/configs/<config>.yaml
    python recipes/adapter_finetune.py --config ... method.placement=pfeiffer method.reduction_factor=8
"""

import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))

from _launch import launch  # noqa: E402


if __name__ == "__main__":
    launch("adapter", __doc__.splitlines()[0])
