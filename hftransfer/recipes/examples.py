"""The example YAML configs shipped with hftransfer (``recipes/configs/`` in the repo, package data in the wheel)."""

from __future__ import annotations

from pathlib import Path


# In a checkout this folder is a link to the repo's recipes/configs/; a wheel holds copies of the files.
CONFIGS_DIR = Path(__file__).parent / "configs"
EXAMPLES_PREFIX = "recipes/configs/"  # how the README and `hftransfer recipes` name them


def example_configs() -> dict[str, Path]:
    """The shipped example configs by file name, e.g. ``{"demo_digits.yaml": Path(...)}``."""
    return {path.name: path for path in sorted(CONFIGS_DIR.glob("*.yaml"))}


def resolve_config(path: str | Path) -> Path:
    """``path`` when it exists; else the shipped example it names.

    ``demo_digits``, ``demo_digits.yaml`` and ``recipes/configs/demo_digits.yaml`` all name the shipped example, so the
    README's commands work from any folder once hftransfer is installed. Other missing paths are returned unchanged.
    """
    path = Path(path)
    if path.exists():
        return path
    text = path.as_posix()
    if "/" in text and not text.startswith(EXAMPLES_PREFIX):
        return path
    name = path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml"
    return example_configs().get(name, path)
