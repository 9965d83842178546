"""Recipe registry: a recipe = a transfer method + the hyperparameters that suit it + a launch script."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from hftransfer.errors import ConfigurationError


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
        raise ConfigurationError(f"Recipe {recipe.name!r} is already registered.")
    RECIPES[recipe.name] = recipe
    return recipe


def list_recipes() -> list[str]:
    return sorted(RECIPES)


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ConfigurationError(f"Unknown recipe {name!r}. Valid recipes: {', '.join(list_recipes())}. "
                         "List them with `hftransfer recipes`.")
    return RECIPES[name]


def with_recipe_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge the recipe's defaults under the user's values (the user's always win)."""
    recipe = get_recipe(data.get("recipe", "full"))
    return _deep_merge(copy.deepcopy(recipe.defaults), data)


def as_recipe(data: dict[str, Any], recipe: str) -> tuple[dict[str, Any], list[str]]:
    """Config options written for any recipe, made to run as ``recipe``.

    Everything carries over (model, data, optimizer, schedule, ...) except the ``method`` options the new recipe's
    method does not take: those are dropped and returned, so the caller can say so. The new recipe's own defaults
    fill what the options leave out, as for any config.
    """
    import dataclasses

    from hftransfer.methods.registry import METHODS

    get_recipe(recipe)
    data = {**data, "recipe": recipe}
    options = data.get("method") or {}
    if not isinstance(options, dict):
        return data, []
    accepted = {f.name for f in dataclasses.fields(METHODS[get_recipe(recipe).method].config_cls)}
    dropped = sorted(k for k in options if k not in accepted)
    data["method"] = {k: v for k, v in options.items() if k in accepted}
    return data, dropped


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = _deep_merge(base[key], value)
        else:
            base[key] = value
    return base
