"""Named recipes (one module each): ``hftransfer recipes`` lists them."""

from hftransfer.recipes import full, linear_probe, lora  # noqa: F401  (registration)
from hftransfer.recipes import p_tuning, prefix_tuning, prompt_tuning, vpt  # noqa: F401  (registration)
from hftransfer.recipes.registry import RECIPES, Recipe, get_recipe, list_recipes, register_recipe


__all__ = ["RECIPES", "Recipe", "get_recipe", "list_recipes", "register_recipe"]
