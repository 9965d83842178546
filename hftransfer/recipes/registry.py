"""Recipe registry: a recipe = a transfer method + the training hyperparameters that suit it + a launch script.

One vocabulary: a recipe is named after its method (``recipe: lora`` trains with method ``lora``). Defaults live in
one place each: a method's own options in its config dataclass (``hftransfer/methods/<name>.py``), the training
hyperparameters that suit it here (``hftransfer/recipes/<name>.py``), with ``family_defaults`` for what differs between
text and image backbones. A registered method without a recipe module trains with the plain ``TrainConfig`` defaults.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from hftransfer.errors import ConfigurationError


MODALITIES = ("text", "image")  # the backbone families family_defaults is keyed by (AutoTransfer.modality)
# What family_defaults may set: values resolved after the data (and so the modality) is known, before the model is
# built. Settings the accelerator, the data or the output folder depend on are fixed earlier, so they are not here.
FAMILY_KEYS = ("method", "optim", "scheduler", "epochs", "augment", "label_smoothing", "max_grad_norm",
               "mixup_alpha", "cutmix_alpha", "early_stopping_patience")


@dataclass(frozen=True)
class Recipe:
    name: str
    method: str  # registered method (hftransfer.methods)
    description: str
    defaults: dict[str, Any] = field(default_factory=dict)  # TrainConfig values the user's config overrides
    script: str = "finetune"  # recipes/<script>.py for `accelerate launch` (finetune.py takes any recipe)
    # Per backbone family ("text" / "image"), TrainConfig values layered over ``defaults`` (the user's still win).
    family_defaults: dict[str, dict[str, Any]] = field(default_factory=dict)
    example_model: str = "packaged:all-MiniLM-L6-v2"  # the backbone `hftransfer recipes` shows in the example

    def __post_init__(self):
        unknown = sorted(set(self.family_defaults) - set(MODALITIES))
        if unknown:
            raise ValueError(f"Recipe {self.name!r}: family_defaults keys {unknown} must be among {list(MODALITIES)}.")
        for modality, values in self.family_defaults.items():
            bad = sorted(set(values) - set(FAMILY_KEYS))
            if bad:
                raise ValueError(f"Recipe {self.name!r}: family_defaults[{modality!r}] sets {bad}; only {FAMILY_KEYS} "
                                 "may depend on the backbone family.")

    def defaults_for(self, modality: str | None) -> dict[str, Any]:
        """The defaults that apply to a backbone of ``modality`` (None: the family-independent ones only)."""
        base = copy.deepcopy(self.defaults)
        return _deep_merge(base, copy.deepcopy(self.family_defaults.get(modality or "", {})))


RECIPES: dict[str, Recipe] = {}


def register_recipe(recipe: Recipe) -> Recipe:
    if recipe.name in RECIPES:
        raise ConfigurationError(f"Recipe {recipe.name!r} is already registered.")
    RECIPES[recipe.name] = recipe
    return recipe


def list_recipes() -> list[str]:
    """Every recipe name: the registered recipes plus every registered method (a method is its own recipe)."""
    from hftransfer.methods import list_methods

    return sorted(set(RECIPES) | set(list_methods()))


def get_recipe(name: str) -> Recipe:
    if name in RECIPES:
        return RECIPES[name]
    from hftransfer.methods import METHODS

    if name in METHODS:
        return Recipe(name=name, method=name, description=METHODS[name].description)
    raise ConfigurationError(f"Unknown recipe {name!r}. Valid recipes: {', '.join(list_recipes())}. "
                             "List them with `hftransfer recipes`.")


def with_recipe_defaults(data: dict[str, Any], modality: str | None = None) -> dict[str, Any]:
    """Deep-merge the recipe's defaults (for a ``modality`` backbone when known) under the user's values."""
    recipe = get_recipe(data.get("recipe", "full"))
    return _deep_merge(recipe.defaults_for(modality), data)


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
