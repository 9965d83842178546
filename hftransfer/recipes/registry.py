"""Recipes: ``recipe: <name>`` trains the registered method ``<name>`` with the training defaults it registered.

A recipe is named after its method, and everything about it is in the method's one registration
(``@register_method(name, ConfigCls, defaults=..., family_defaults=..., example_model=...)`` in
``hftransfer/methods/<name>.py``): the method's own options in its config dataclass, the training hyperparameters that
suit it in ``defaults``, what differs between text and image backbones in ``family_defaults``. This module only reads
those entries; a method registered without defaults trains with the plain ``TrainConfig`` defaults.
"""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Any

from hftransfer.errors import ConfigurationError
from hftransfer.methods.registry import FAMILY_KEYS, METHODS, MODALITIES, MethodEntry, deep_merge, list_methods


PROG = "python -m hftransfer.recipes"  # the module that runs any recipe config (hftransfer/recipes/launch.py)
LAUNCH = "accelerate launch -m hftransfer.recipes"  # how the listing, README and config headers launch a config


__all__ = ["FAMILY_KEYS", "MODALITIES", "RECIPES", "Recipe", "as_recipe", "get_recipe", "list_recipes",
           "with_recipe_defaults"]

Recipe = MethodEntry  # what get_recipe returns: the method's registration (name, description, defaults, ...)
RECIPES = MappingProxyType(METHODS)  # read-only view: recipe name -> Recipe (every registered method)


def list_recipes() -> list[str]:
    """Every recipe name: one per registered method."""
    return list_methods()


def get_recipe(name: str) -> Recipe:
    if name in METHODS:
        return METHODS[name]
    raise ConfigurationError(f"Unknown recipe {name!r}. Valid recipes: {', '.join(list_recipes())}. "
                             "List them with `hftransfer recipes`.")


def with_recipe_defaults(data: dict[str, Any], modality: str | None = None) -> dict[str, Any]:
    """Deep-merge the recipe's defaults (for a ``modality`` backbone when known) under the user's values."""
    recipe = get_recipe(data.get("recipe", "full"))
    return deep_merge(recipe.defaults_for(modality), data)


def as_recipe(data: dict[str, Any], recipe: str) -> tuple[dict[str, Any], list[str]]:
    """Config options written for any recipe, made to run as ``recipe``.

    Everything carries over (model, data, optimizer, schedule, ...) except the ``method`` options the new recipe's
    method does not take: those are dropped and returned, so the caller can say so. The new recipe's own defaults
    fill what the options leave out, as for any config.
    """
    config_cls = get_recipe(recipe).config_cls
    data = {**data, "recipe": recipe}
    options = data.get("method") or {}
    if not isinstance(options, dict):
        return data, []
    accepted = {f.name for f in dataclasses.fields(config_cls)}
    dropped = sorted(k for k in options if k not in accepted)
    data["method"] = {k: v for k, v in options.items() if k in accepted}
    return data, dropped
