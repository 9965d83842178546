"""Named recipes (one module each): ``hftransfer recipes`` lists them."""

# Registration: importing a recipe module registers it (a method without one still trains, with TrainConfig defaults).
from hftransfer.recipes import (  # noqa: F401  # noqa: F401
    adapter,
    full,
    linear_probe,
    lora,
    p_tuning,
    peft_catalogue,
    prefix_tuning,
    prompt_tuning,
    vpt,
)
from hftransfer.recipes.registry import RECIPES, Recipe, get_recipe, list_recipes, register_recipe


__all__ = ["RECIPES", "Recipe", "get_recipe", "list_recipes", "register_recipe"]
