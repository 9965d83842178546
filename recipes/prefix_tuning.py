"""Prefix tuning (P-Tuning v2): fresh prompt tokens before every layer of a frozen text encoder, plus a head.

Runs on one CPU/GPU or many processes with the same config:

    python recipes/prefix_tuning.py --config recipes/configs/<config>.yaml [key=value ...]
    accelerate launch --multi_gpu --num_processes 2 recipes/prefix_tuning.py --config recipes/configs/<config>.yaml
    accelerate launch --mixed_precision bf16 recipes/prefix_tuning.py --config ...   # or mixed_precision=bf16
"""

import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))

from _launch import launch  # noqa: E402


if __name__ == "__main__":
    launch("prefix_tuning", __doc__.splitlines()[0])
