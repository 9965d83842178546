"""LoRA (PEFT) adapters on the backbone plus a trained head; method.use_dora=true for DoRA.

Runs on one CPU/GPU or many processes with the same config:

    python recipes/lora_finetune.py --config recipes/configs/<config>.yaml [key=value ...]
    accelerate launch --multi_gpu --num_processes 2 recipes/lora_finetune.py --config recipes/configs/<config>.yaml
    accelerate launch --mixed_precision bf16 recipes/lora_finetune.py --config ...   # or mixed_precision=bf16
"""

import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))

from _launch import launch  # noqa: E402


if __name__ == "__main__":
    launch("lora", __doc__.splitlines()[0])
