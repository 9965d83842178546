"""P-tuning: input prompts from an MLP prompt encoder on a frozen text encoder, plus a trained head.

Runs on one CPU/GPU or many processes with the same config:

    python recipes/p_tuning.py --config recipes/configs/<config>.yaml [key=value ...]
    accelerate launch --multi_gpu --num_processes 2 recipes/p_tuning.py --config recipes/configs/<config>.yaml
    accelerate launch --mixed_precision bf16 recipes/p_tuning.py --config ...   # or mixed_precision=bf16
"""

import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))

from _launch import launch  # noqa: E402


if __name__ == "__main__":
    launch("p_tuning", __doc__.splitlines()[0])
