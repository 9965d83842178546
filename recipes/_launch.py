"""Shared entry point of the recipe scripts: ``--config FILE`` plus ``key=value`` overrides, recipe fixed."""

from __future__ import annotations

import argparse

from hftransfer.training import train


def launch(recipe: str, description: str) -> None:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, help="YAML config (recipes/configs/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. optim.lr=3e-4")
    args = parser.parse_args()
    # The script decides the recipe; a config written for another recipe is still usable (its options carry over).
    train(args.config, overrides=[*args.overrides, f"recipe={recipe}"])
