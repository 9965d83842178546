"""Any recipe config, from a checkout: the same as ``python -m hftransfer.recipes`` (which also works from a wheel).

    python recipes/finetune.py --config recipes/configs/<config>.yaml [key=value ...]
    accelerate launch --multi_gpu --num_processes 2 recipes/finetune.py --config recipes/configs/<config>.yaml
    python recipes/finetune.py --config recipes/configs/minilm_sst2_ia3.yaml recipe=loha   # another method
"""

import sys

from hftransfer.recipes.launch import main


if __name__ == "__main__":
    sys.exit(main())
