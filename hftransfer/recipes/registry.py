"""Recipe registry: a recipe = a transfer method + the hyperparameters that suit it + a launch script."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Recipe:
    name: str
    method: str  # registered method (hftransfer.methods)
    description: str
    defaults: dict[str, Any] = field(default_factory=dict)  # TrainConfig values the user's config overrides
    script: str = ""  # recipes/<script>.py for `accelerate launch`


RECIPES: dict[str, Recipe] = {}


def register_recipe(recipe: Recipe) -> Recipe:
    if recipe.name in RECIPES:
        raise ValueError(f"Recipe {recipe.name!r} is already registered.")
    RECIPES[recipe.name] = recipe
    return recipe


def list_recipes() -> list[str]:
    return sorted(RECIPES)


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"Unknown recipe {name!r}. Valid recipes: {', '.join(list_recipes())}. "
                         "List them with `hftransfer recipes`.")
    return RECIPES[name]


def with_recipe_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge the recipe's defaults under the user's values (the user's always win)."""
    recipe = get_recipe(data.get("recipe", "full"))
    return _deep_merge(copy.deepcopy(recipe.defaults), data)


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = _deep_merge(base[key], value)
        else:
            base[key] = value
    return base
