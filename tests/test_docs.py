"""Every code block of README.md, CONTRIBUTING.md and docs/ runs here, or is marked as not run with a reason.

A fenced block in a runnable language (python, bash, yaml) runs unless the line just before it is
``<!-- notest: REASON -->``; a block in any other language (a text diagram) must carry that marker. Blocks of one
page run in order, in one sandbox folder (the repository's ``recipes/``, ``bench/`` and ``.venv/`` linked in, small
labelled CSV files and image folders written), sharing one Python namespace:
- python blocks are executed;
- bash lines starting with ``hftransfer`` run in-process through ``hftransfer.cli.main`` (exit status 0 required);
  other bash lines run in ``bash`` with the virtualenv first on PATH;
- yaml blocks must build a valid ``TrainConfig`` when merged over a tiny base config.
To keep the pages fast and offline, ``packaged:all-MiniLM-L6-v2`` is replaced by the tiny BERT folder, and every
training config built in this process is capped (``CAPS``: a few dozen rows, one epoch, fp32, no progress bars);
commands that start their own processes (``python recipes/...``, ``hftransfer compare``) carry small caps in the text.
The quick tier checks the markers, the generated reference pages and that the README lists every recipe and
objective; running the pages is the integration tier (training runs, packaged weights).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shlex
import subprocess
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import REPO


DOC_FILES = [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").rglob("*.md"))]
RUNNABLE = {"python", "py", "bash", "sh", "console", "yaml", "yml"}
NOTEST = re.compile(r"^<!-- notest: (?P<reason>\S.*?) -->$")
FENCE = re.compile(r"^(?P<indent> *)```(?P<info>[^`\n]*)\n(?P<body>.*?)^(?P=indent)```$", re.MULTILINE | re.DOTALL)
# Training caps: enough to exercise every example end to end in seconds on two cores.
CAPS = {"epochs": 1, "max_train_samples": 48, "max_eval_samples": 24, "mixed_precision": "no", "image_size": 32}


@dataclass
class Block:
    path: Path
    line: int
    lang: str
    body: str
    notest: str | None

    def __str__(self) -> str:
        shown = self.path.relative_to(REPO) if self.path.is_relative_to(REPO) else self.path.name
        return f"{shown}:{self.line} ({self.lang})"


def code_blocks(path: Path) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    blocks = []
    for match in FENCE.finditer(text):
        lang = (match.group("info").strip().split() or [""])[0].lower()
        line = text.count("\n", 0, match.start()) + 1
        before = text[:match.start()].rstrip("\n").splitlines()
        marker = NOTEST.match(before[-1].strip()) if before else None
        body = "\n".join(row[len(match.group("indent")):] for row in match.group("body").splitlines())
        blocks.append(Block(path, line, lang, body, marker.group("reason") if marker else None))
    return blocks


def _load_hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", REPO / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- quick tier: structure ---------------------------------------------------------------------------------------

def test_every_block_is_runnable_or_marked_with_a_reason():
    for path in DOC_FILES:
        for block in code_blocks(path):
            assert block.lang, f"{block}: give the fence a language (python, bash, yaml, text, ...)"
            if block.notest is None:
                assert block.lang in RUNNABLE, f"{block}: {block.lang} cannot run: mark it <!-- notest: WHY -->"
            else:
                assert len(block.notest) >= 10, f"{block}: say why the block is not run"


def test_notest_marker_parsing(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n\n<!-- notest: needs a GPU -->\n```bash\nnvidia-smi\n```\n\n```python\nx = 1\n```\n")
    first, second = code_blocks(page)
    assert (first.lang, first.notest, first.body) == ("bash", "needs a GPU", "nvidia-smi")
    assert (second.lang, second.notest, second.body, second.line) == ("python", None, "x = 1", 8)


def test_readme_is_short_and_lists_every_recipe_and_objective():
    from hftransfer.objectives import list_objectives
    from hftransfer.recipes import list_recipes

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 150
    for name in list_recipes() + list_objectives():
        assert f"`{name}`" in readme, f"README.md does not list {name!r}"


def test_generated_reference_covers_the_registries():
    from hftransfer.methods.registry import METHODS
    from hftransfer.objectives import OBJECTIVES
    from hftransfer.training.config import config_help

    hooks = _load_hooks()
    config = hooks.gen_config()
    for line in config_help().splitlines():  # every option --help-config lists is in the reference
        key = re.match(r"^  (\S+) \(", line)
        if key:
            assert f"`{key.group(1)}`" in config, key.group(1)
    methods, objectives = hooks.gen_methods(), hooks.gen_objectives()
    assert all(f"`{name}`" in methods for name in METHODS)
    assert all(f"`{name}`" in objectives for name in OBJECTIVES)
    assert all(entry.modality_defaults_line() in objectives for entry in OBJECTIVES.values()
               if entry.modality_defaults)
    assert "text: source_warmup=0.5, weight=0.3" in objectives  # dann's and mmd's registered text defaults
    per_modality = hooks.gen_objective_modality_defaults()
    assert "| `dann` | `source_warmup: 0.5`, `weight: 0.3` | the options' defaults |" in per_modality
    assert "source_only" not in per_modality  # it reads no target
    cli = hooks.gen_cli()
    for command in ("train", "evaluate", "predict", "push", "recipes"):
        assert f"## `hftransfer {command}`" in cli
    errors = hooks.gen_errors()
    assert "`DataError`" in errors and "`OutputDirError`" in errors
    assert hooks.render("a\n<!-- gen:objectives -->\nb") == f"a\n{objectives}\nb"
    with pytest.raises(KeyError, match="gen:nope names no generator"):
        hooks.render("<!-- gen:nope -->")


def test_every_bench_result_page_is_served():
    hooks = _load_hooks()
    served = dict(hooks.bench_files())
    assert served["bench/results/RESULTS.md"] == REPO / "bench" / "results" / "RESULTS.md"
    assert "bench/results/DA.md" in served and "bench/README.md" in served


# --- integration tier: run the pages -----------------------------------------------------------------------------

def _write_sandbox(root: Path) -> None:
    import numpy as np
    from PIL import Image

    for name in ("recipes", ".venv", "bench"):
        (root / name).symlink_to(REPO / name)
    pos, neg = ["good", "great", "fun"], ["bad", "awful", "dull"]
    rows = [(f"the movie was very {(pos if i % 2 == 0 else neg)[i % 3]}", "positive" if i % 2 == 0 else "negative")
            for i in range(48)]
    for name, part in (("reviews.csv", rows), ("reviews_test.csv", rows[:16]), ("new_reviews.csv", rows[16:32]),
                      ("reviews_val.csv", rows[32:48])):
        (root / name).write_text("review,sentiment\n" + "".join(f"{r},{s}\n" for r, s in part))
    import pandas as pd

    pd.DataFrame({"review": [r for r, _ in rows[:8]]}).to_parquet(root / "unlabelled.parquet")
    (root / "unlabelled.txt").write_text("what a great film\nso boring\n")
    rng = np.random.default_rng(0)
    for split, count in (("train", 12), ("val", 4)):
        for label in ("ants", "bees"):
            folder = root / "my_images" / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{label}_{i}.png")


@pytest.fixture
def sandbox(tmp_path, tiny_models, monkeypatch):
    from hftransfer.training import config as config_module

    _write_sandbox(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", f"{REPO / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}")
    original = config_module.TrainConfig.from_dict.__func__

    def capped(cls, data, *args, **kwargs):
        data = dict(data)
        data["epochs"] = min(int(data.get("epochs") or 1), CAPS["epochs"])
        data["mixed_precision"] = CAPS["mixed_precision"]
        data["progress_bar"] = False
        data_section = dict(data.get("data") or {})
        for key in ("max_train_samples", "max_eval_samples"):
            data_section[key] = min(data_section.get(key) or CAPS[key], CAPS[key])
        data["data"] = data_section
        model = dict(data.get("model") or {})
        if model.get("image_size"):
            model["image_size"] = min(int(model["image_size"]), CAPS["image_size"])
        data["model"] = model
        return original(cls, data, *args, **kwargs)

    monkeypatch.setattr(config_module.TrainConfig, "from_dict", classmethod(capped))
    return {"root": tmp_path, "substitutions": {"packaged:all-MiniLM-L6-v2": tiny_models["transformers_bert"]}}


def _substitute(text: str, substitutions: dict[str, str]) -> str:
    for old, new in substitutions.items():
        text = text.replace(old, new)
    return text


def _run_bash(block: Block, text: str) -> None:
    from hftransfer.cli import main

    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        argv = shlex.split(line, comments=True)
        if argv[0] == "hftransfer" and "|" not in argv:
            with contextlib.redirect_stdout(sys.stderr):
                try:
                    status = main(argv[1:])
                except SystemExit as done:  # argparse: --version, --help, a usage error
                    status = done.code
            assert status in (0, None), f"{block}: `{line}` exited with {status}"
        else:
            done = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, f"{block}: `{line}` failed:\n{done.stdout}\n{done.stderr}"


def _check_yaml(block: Block, text: str) -> None:
    import yaml

    from hftransfer.training.config import TrainConfig

    data = yaml.safe_load(text)
    assert isinstance(data, dict), f"{block}: a config fragment must be a mapping"
    base = {"model": {"name": "timm:test_resnet", "pretrained": False}, "data": {"source": "sklearn_digits"}}
    for key, value in data.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    TrainConfig.from_dict(base)


def _run_page(path: Path, sandbox: dict) -> int:
    module = types.ModuleType(f"docs_example_{abs(hash(path))}")  # a real module: dataclasses look their module up
    sys.modules[module.__name__] = module
    try:
        return _run_blocks(path, sandbox, module.__dict__)
    finally:
        del sys.modules[module.__name__]


def _run_blocks(path: Path, sandbox: dict, namespace: dict) -> int:
    ran = 0
    for block in code_blocks(path):
        if block.notest is not None or block.lang not in RUNNABLE:
            continue
        started = time.perf_counter()
        text = _substitute(block.body, sandbox["substitutions"])
        if block.lang in ("python", "py"):
            exec(compile(text, str(block), "exec"), namespace)
        elif block.lang in ("yaml", "yml"):
            _check_yaml(block, text)
        else:
            _run_bash(block, text)
        print(f"{block}: {time.perf_counter() - started:.1f} s", file=sys.stderr)
        ran += 1
    return ran


PAGES_WITH_CODE = [p for p in DOC_FILES if any(b.lang in RUNNABLE and b.notest is None for b in code_blocks(p))]


@pytest.mark.integration
@pytest.mark.parametrize("path", PAGES_WITH_CODE, ids=lambda p: str(p.relative_to(REPO)))
def test_page_examples_run(path, sandbox):
    assert _run_page(path, sandbox) > 0


def test_a_broken_yaml_example_fails(tmp_path):
    from hftransfer.errors import ConfigurationError

    block = Block(tmp_path / "page.md", 1, "yaml", "", None)
    _check_yaml(block, "optim: {lr: 1.0e-3}\nsampler: balanced")
    with pytest.raises(ConfigurationError, match="optim.lr"):
        _check_yaml(block, "optim: {lr: -1}")
    with pytest.raises(AssertionError, match="must be a mapping"):
        _check_yaml(block, "- just a list")


@pytest.mark.integration
def test_a_broken_example_fails(tmp_path, sandbox):
    page = tmp_path / "broken.md"
    page.write_text("```bash\nhftransfer train demo_digits optim.lr=-1\n```\n")
    with pytest.raises(AssertionError, match="exited with 2"):
        _run_page(page, sandbox)


@pytest.mark.integration
def test_site_builds_strict(tmp_path):
    """`make docs`: a broken link, a missing API reference or a failing generator fails the strict build."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    config_page = (tmp_path / "site" / "reference" / "config" / "index.html").read_text(encoding="utf-8")
    assert "<code>optim.lr</code>" in config_page and "<!-- gen:" not in config_page
    assert (tmp_path / "site" / "bench" / "results" / "RESULTS" / "index.html").is_file()
