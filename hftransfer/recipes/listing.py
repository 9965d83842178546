"""What ``hftransfer recipes`` shows per recipe: description, supported backbones, training defaults, an example."""

from __future__ import annotations

import dataclasses
from typing import Any

from hftransfer.recipes.registry import LAUNCH, get_recipe


def _flat(values: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, value in values.items():
        if isinstance(value, dict):
            out += _flat(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}={value}")
    return out


def method_option_defaults(method: str) -> dict[str, Any]:
    """The method's options and their defaults (from its config dataclass; fields filled by apply() left out)."""
    fields = dataclasses.fields(get_recipe(method).config_cls)
    out = {}
    for f in fields:
        if f.name == "resolved_targets":
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        out[f.name] = default
    return out


def example_yaml(name: str) -> str:
    """A minimal config for ``name`` (one line per key, for the listing)."""
    recipe = get_recipe(name)
    options = method_option_defaults(name)
    lines = [f"recipe: {name}"]
    own = vars(recipe.config_cls).get("__annotations__", {})  # the method's own options, not shared ones (probe_*)
    shown = [(k, v) for k, v in options.items() if k in own and v not in (None, [], {}, False)]
    if shown:
        lines.append("method: {" + ", ".join(f"{k}: {v}" for k, v in shown[:4]) + "}")
    lines.append(f"model: {{name: {recipe.example_model}}}")
    hub = "" if recipe.example_model.startswith("packaged:") else "  (a hub model)"
    return "; ".join(lines) + hub


def recipe_lines(name: str, width: int = 14) -> list[str]:
    """The lines ``hftransfer recipes`` prints for one recipe (its example config files are added by the CLI)."""
    recipe = get_recipe(name)
    pad = " " * width
    lines = [f"{name:{width}s} {recipe.description}",
             f"{pad}   supports: {recipe.method_cls.supported_backbones}"]
    options = method_option_defaults(name)
    if options:
        lines.append(f"{pad}   method options: " + ", ".join(f"{k}={v}" for k, v in options.items()))
    defaults = _flat(recipe.defaults)
    lines.append(f"{pad}   training defaults: " + (" ".join(defaults) if defaults else "TrainConfig defaults"))
    for modality, values in sorted(recipe.family_defaults.items()):
        lines.append(f"{pad}   {modality} backbones: " + " ".join(_flat(values)))
    lines.append(f"{pad}   example: {example_yaml(name)}")
    return lines


def launch_lines() -> list[str]:
    """How any recipe config is launched (``hftransfer recipes`` prints it once; works from a wheel install)."""
    return ["recipes (`recipe: NAME` in a config). Run any config, from a checkout or a wheel install:",
            "  hftransfer train CONFIG.yaml [key=value ...]",
            "  python -m hftransfer.recipes --config CONFIG.yaml [key=value ...]",
            f"  {LAUNCH} --config CONFIG.yaml [key=value ...]   # several processes / GPUs", ""]
