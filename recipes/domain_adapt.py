"""Domain adaptation: any recipe (full, lora, linear_probe) with a training objective (dann, mmd, coral, ...).

The config names the recipe, the objective and the unlabelled target data (prepare the examples' data with
`python recipes/prepare_da_data.py` first):

    python recipes/domain_adapt.py --config recipes/configs/da_mnist_usps_dann.yaml [key=value ...]
    python recipes/domain_adapt.py --config recipes/configs/da_mnist_usps_dann.yaml objective.name=mmd
    accelerate launch --multi_gpu --num_processes 2 recipes/domain_adapt.py --config recipes/configs/<config>.yaml
    accelerate launch --mixed_precision bf16 recipes/domain_adapt.py --config ...   # or mixed_precision=bf16
"""

import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))

from _launch import launch  # noqa: E402


if __name__ == "__main__":
    launch(None, __doc__.splitlines()[0])
