"""Any recipe: the one named by the config's ``recipe:`` (or a ``recipe=NAME`` override), e.g. ia3, loha, vera.

Runs on one CPU/GPU or many processes with the same config:

    python recipes/finetune.py --config recipes/configs/<config>.yaml [key=value ...]
    accelerate launch --multi_gpu --num_processes 2 recipes/finetune.py --config recipes/configs/<config>.yaml
    python recipes/finetune.py --config recipes/configs/minilm_sst2_ia3.yaml recipe=loha   # another method
"""

import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))

from _launch import launch  # noqa: E402


if __name__ == "__main__":
    launch(None, __doc__.splitlines()[0])
