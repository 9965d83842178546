"""Any recipe: the one named by the config's ``recipe:`` (or a ``recipe=NAME`` override), e.g. ia3, loha, vera.

Runs on one CPU/GPU or many processes with the same config:

    python recipes/finetune.py --config recipes/configs/<config>.yaml [key=value ...]
    accelerate launch --multi_gpu --num_processes 2 recipes/finetune.py --config recipes/configs/<config>.yaml
    python recipes/finetune.py --config recipes/configs/minilm_sst2_ia3.yaml recipe=loha   # another method
"""

import argparse

from hftransfer.training import train


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="YAML config (recipes/configs/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. recipe=ia3 optim.lr=3e-3")
    args = parser.parse_args()
    train(args.config, overrides=args.overrides)
