"""MkDocs hooks: reference pages generated from the code, and bench/ results served in place.

A page asks for generated content with a marker line ``<!-- gen:NAME -->`` (NAME in :data:`GENERATORS`); the
text comes from the registries, the dataclass field metadata and the argparse parsers, so it is never written twice.
``bench/README.md`` and ``bench/results/`` (tables, plots, JSON) are added to the site under ``bench/`` as they are
in the repository: included, not copied. ``tests/test_docs.py`` imports this module to check every generator.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import re
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"^<!-- gen:([a-z_]+) -->$", re.MULTILINE)
BENCH_GLOBS = ("README.md", "results/*.md", "results/*.png", "results/*.json", "results/*/*.md", "results/*/*.png",
               "results/*/*.json", "results/rank/*/*.md", "results/rank/*/*.png", "results/rank/*/*.json")


def _cell(text: object) -> str:
    """One table cell: newlines folded, pipes escaped outside code spans (inside them a pipe never splits a cell)."""
    parts = str(text).replace("\n", " ").split("`")
    return "`".join(p if i % 2 else p.replace("|", "\\|") for i, p in enumerate(parts)).strip()


def field_rows(cls: type, prefix: str = "", skip: tuple[str, ...] = ()) -> list[tuple[str, str, str, str]]:
    """``(dotted key, type, default, help)`` of every field of a config dataclass (``--help-config``'s rows)."""
    from hftransfer.training.config import option_rows

    return [(key, kind, repr(default), text) for key, kind, default, text in option_rows(cls, prefix, skip)]


def _table(header: tuple[str, ...], rows: list[tuple]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _options_table(cls: type, prefix: str, skip: tuple[str, ...] = ()) -> str:
    rows = [(f"`{key}`", f"`{kind}`", f"`{default}`", text)
            for key, kind, default, text in field_rows(cls, prefix, skip)]
    return _table(("option", "type", "default", "meaning"), rows) if rows else "(no options)"


def gen_config() -> str:
    """Every training option (the source of ``hftransfer train --help-config``), then each method's options."""
    from hftransfer.methods.registry import METHODS
    from hftransfer.training.config import TrainConfig

    parts = ["## Training options (`TrainConfig`)", "", _options_table(TrainConfig, "", skip=("method",))]
    for name, entry in sorted(METHODS.items()):
        parts += ["", f"## `method.*` options of `{name}` (`{entry.config_cls.__name__}`)", "",
                  _options_table(entry.config_cls, "method.")]
    return "\n".join(parts)


def gen_cli() -> str:
    """``--help`` of ``hftransfer`` and of each subcommand, from :func:`hftransfer.cli.build_parser`."""
    import argparse

    from hftransfer.cli import build_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "110"  # argparse wraps at $COLUMNS: a fixed width gives the same page everywhere
    try:
        parser = build_parser()
        parts = ["## `hftransfer`", "", "```text", parser.format_help().rstrip(), "```"]
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        for name, subparser in sub.choices.items():
            parts += ["", f"## `hftransfer {name}`", "", "```text", subparser.format_help().rstrip(), "```"]
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old
    return "\n".join(parts)


def gen_methods() -> str:
    """The registered methods (each is also a recipe) with their backbones and options."""
    from hftransfer.methods.registry import METHODS, list_methods

    rows = []
    for name in list_methods():
        entry = METHODS[name]
        options = ", ".join(f"`{f.name}`" for f in dataclasses.fields(entry.config_cls)) or "–"
        rows.append((f"`{name}`", entry.description, entry.method_cls.supported_backbones, options,
                     f"`{entry.method_cls.__module__}`"))
    return _table(("recipe / method", "what it does", "backbones", "`method.*` options", "module"), rows)


def gen_objectives() -> str:
    """The registered training objectives with what they combine with and their options."""
    from hftransfer.objectives.registry import ALIASES, OBJECTIVES

    aliases = {target: alias for alias, target in ALIASES.items()}
    rows = []
    for name, entry in sorted(OBJECTIVES.items()):
        options = ", ".join(f"`{f.name}`" for f in dataclasses.fields(entry.config_cls)) or "–"
        label = f"`{name}`" + (f" (alias `{aliases[name]}`)" if name in aliases else "")
        per_modality = entry.modality_defaults_line() or "–"
        rows.append((label, entry.description, entry.combines_with, options, per_modality,
                     f"`{entry.objective_cls.__module__}`"))
    return _table(("objective", "what it adds", "combines with", "`objective.*` options",
                   "per-modality defaults (over the options' defaults)", "module"), rows)


def gen_objective_modality_defaults() -> str:
    """Each objective's registered defaults for text and image backbones (over its options' defaults)."""
    from hftransfer.objectives.registry import OBJECTIVES
    from hftransfer.utils.modalities import MODALITIES

    rows = [(f"`{name}`", *(", ".join(f"`{k}: {json.dumps(v)}`" for k, v in entry.modality_defaults.get(m, {}).items())
                            or "the options' defaults" for m in MODALITIES))
            for name, entry in sorted(OBJECTIVES.items()) if entry.objective_cls.needs_target]
    return _table(("objective", *(f"{m} backbones" for m in MODALITIES)), rows)


ERROR_MODULES = ("hftransfer.errors", "hftransfer.data.errors", "hftransfer.hub.push", "hftransfer.export.errors")


def error_classes() -> list[type]:
    """Every ``HFTransferError`` subclass defined in :data:`ERROR_MODULES`, base first."""
    import importlib

    from hftransfer.errors import HFTransferError

    found = [HFTransferError]
    for module_name in ERROR_MODULES:
        module = importlib.import_module(module_name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, HFTransferError) and obj.__module__ == module_name and obj not in found:
                found.append(obj)
    return found


def gen_errors() -> str:
    """The error hierarchy: each class, its module, what else it is (ValueError, OSError, ...) and its docstring."""
    rows = []
    for cls in error_classes():
        bases = ", ".join(f"`{b.__name__}`" for b in cls.__mro__[1:] if b not in (object, BaseException))
        rows.append((f"`{cls.__name__}`", f"`{cls.__module__}`", bases or "–",
                     inspect.getdoc(cls) or ""))
    return _table(("error", "module", "is also", "raised when"), rows)


def gen_bench() -> str:
    """Links to every bench/ page served under ``bench/`` and the plots shown inline (for a page at the docs root)."""
    lines = []
    for src_uri, path in bench_files():
        if path.suffix == ".md":
            title = next((row.lstrip("# ").strip() for row in path.read_text(encoding="utf-8").splitlines()
                          if row.startswith("#")), path.stem)
            lines.append(f"- [{title}]({src_uri}) (`{path.relative_to(REPO).as_posix()}`)")
    plots = [f"![{path.stem}]({src_uri})" for src_uri, path in bench_files() if path.suffix == ".png"]
    return "\n".join(lines + [""] + plots)


# Root files shown as pages: their links are relative to the repository root, the page's to docs/.
ROOT_LINKS = {"](docs/": "](", "](CHANGELOG.md)": "](changelog.md)", "](CONTRIBUTING.md)": "](contributing.md)"}


def _root_file(name: str) -> str:
    text = (REPO / name).read_text(encoding="utf-8")
    for old, new in ROOT_LINKS.items():
        text = text.replace(old, new)
    return text


GENERATORS = {"config": gen_config, "cli": gen_cli, "methods": gen_methods, "objectives": gen_objectives,
              "objective_modality_defaults": gen_objective_modality_defaults,
              "errors": gen_errors, "bench": gen_bench,
              "contributing": lambda: _root_file("CONTRIBUTING.md"), "changelog": lambda: _root_file("CHANGELOG.md")}


def render(markdown: str) -> str:
    """``markdown`` with each ``<!-- gen:NAME -->`` marker line replaced by its generated text."""

    def replace(match: re.Match) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            raise KeyError(f"docs marker gen:{name} names no generator; known: {sorted(GENERATORS)}")
        return GENERATORS[name]()

    return MARKER.sub(replace, markdown)


def bench_files() -> list[tuple[str, Path]]:
    """``(site path, file)`` of the bench/ pages, plots and JSON the Benchmarks section serves in place."""
    bench = REPO / "bench"
    return [(f"bench/{path.relative_to(bench).as_posix()}", path)
            for pattern in BENCH_GLOBS for path in sorted(bench.glob(pattern))]


# --- MkDocs event hooks ----------------------------------------------------------------------------------------------

def on_files(files, config):
    from mkdocs.structure.files import File

    for src_uri, path in bench_files():
        files.append(File.generated(config, src_uri, abs_src_path=str(path)))
    return files


def on_page_markdown(markdown, page, config, files):
    return render(markdown)
