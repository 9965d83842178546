"""Shared entry point of the recipe scripts: ``--config FILE`` plus ``key=value`` overrides; the script fixes the
recipe, or (``recipe=None``: finetune.py, domain_adapt.py) the config names it."""

from __future__ import annotations

import argparse
import sys

from hftransfer.errors import HFTransferError
from hftransfer.recipes.registry import as_recipe
from hftransfer.training import train
from hftransfer.training.config import apply_overrides, read_yaml_config


def launch(recipe: str | None, description: str) -> None:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, help="YAML config (recipes/configs/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. optim.lr=3e-4")
    args = parser.parse_args()
    try:
        # The script decides the recipe. A config written for another recipe is still usable: its options carry
        # over, except method options the script's method does not take (dropped, with a note).
        data = apply_overrides(read_yaml_config(args.config), args.overrides)
        if recipe is None:  # the config's own recipe (or a recipe=NAME override) runs
            train(data)
            return
        written_for = data.get("recipe", recipe)
        data, dropped = as_recipe(data, recipe)
        if dropped:
            print(f"note: {args.config} was written for recipe {written_for!r}; this script runs {recipe!r}, which "
                  f"has no method option(s) {dropped}: they were dropped.", file=sys.stderr)
        train(data)
    except HFTransferError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        sys.exit(2)
