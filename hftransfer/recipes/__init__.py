"""Named recipes (one module each): ``hftransfer recipes`` lists them."""

# Registration: importing a recipe module registers it (a method without one still trains, with TrainConfig defaults).
from hftransfer.recipes import adapter, full, linear_probe, lora, peft_catalogue  # noqa: F401
from hftransfer.recipes import p_tuning, prefix_tuning, prompt_tuning, vpt  # noqa: F401
from hftransfer.recipes.registry import RECIPES, Recipe, get_recipe, list_recipes, register_recipe


__all__ = ["RECIPES", "Recipe", "get_recipe", "list_recipes", "register_recipe"]
