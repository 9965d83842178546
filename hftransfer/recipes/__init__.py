"""Recipes: ``recipe: <method>`` plus the training defaults registered with the method. ``hftransfer recipes`` lists
them; ``python -m hftransfer.recipes --config FILE`` (or ``accelerate launch -m hftransfer.recipes ...``) runs one."""

from hftransfer.recipes.registry import RECIPES, Recipe, as_recipe, get_recipe, list_recipes, with_recipe_defaults


__all__ = ["RECIPES", "Recipe", "as_recipe", "get_recipe", "list_recipes", "with_recipe_defaults"]
