"""Visual prompt tuning (shallow or deep, method.deep=true) on a frozen vision transformer, plus a trained head.

Runs on one CPU/GPU or many processes with the same config:

    python recipes/vpt.py --config recipes/configs/<config>.yaml [key=value ...]
    accelerate launch --multi_gpu --num_processes 2 recipes/vpt.py --config recipes/configs/<config>.yaml
    accelerate launch --mixed_precision bf16 recipes/vpt.py --config ...   # or mixed_precision=bf16
"""

import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))

from _launch import launch  # noqa: E402


if __name__ == "__main__":
    launch("vpt", __doc__.splitlines()[0])
