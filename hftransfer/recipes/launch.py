"""The one entry point of every recipe config: ``python -m hftransfer.recipes --config FILE [key=value ...]``.

An entry point like the CLI (it sits above ``training``). Works from a wheel install and under accelerate
(``accelerate launch -m hftransfer.recipes --config FILE``). The
config names the recipe; a ``recipe=NAME`` override runs another one, keeping every option except the ``method``
options NAME's method does not take (dropped, with a note).
"""

from __future__ import annotations

import argparse
import sys

from hftransfer.errors import HFTransferError
from hftransfer.recipes.registry import LAUNCH, PROG, as_recipe
from hftransfer.training import train
from hftransfer.training.config import apply_overrides, read_yaml_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description="Train the recipe a YAML config names (on one CPU/GPU, "
                                     f"or many processes with `{LAUNCH}`).")
    parser.add_argument("--config", required=True, help="YAML config, e.g. recipes/configs/demo_digits.yaml (or a "
                        "shipped example's name: demo_digits)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. optim.lr=3e-4 recipe=lora")
    args = parser.parse_args(argv)
    try:
        written = read_yaml_config(args.config)
        data = apply_overrides(written, args.overrides)
        written_for, recipe = written.get("recipe", "full"), data.get("recipe", "full")
        if recipe != written_for:
            data, dropped = as_recipe(data, recipe)
            if dropped:
                print(f"note: {args.config} was written for recipe {written_for!r}; recipe={recipe} has no method "
                      f"option(s) {dropped}: they were dropped.", file=sys.stderr)
        train(data)
    except HFTransferError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    return 0
