"""Layering, single sources of facts, error types and registries (static checks on the package source)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import hftransfer
from hftransfer.errors import ConfigurationError, HFTransferError


PACKAGE = Path(hftransfer.__file__).resolve().parent
SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if "metrics/modules" not in p.as_posix())


def _runtime_imports(path: Path) -> set[str]:
    """Modules imported by ``path``, ignoring ``if TYPE_CHECKING:`` blocks (annotations only)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    guarded = [n for n in ast.walk(tree) if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test)]
    skipped = {id(n) for node in guarded for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("layer", ["hub", "backbones", "data", "methods", "utils"])
def test_lower_layers_never_import_upper_ones(layer):
    upper = ("hftransfer.modeling", "hftransfer.training", "hftransfer.cli")
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        bad = [m for m in _runtime_imports(path) if m.startswith(upper)]
        assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"
    assert not [m for m in _runtime_imports(PACKAGE / "saved_format.py") if m.startswith("hftransfer.")
                and m not in ("hftransfer.errors", "hftransfer.utils.io")]


@pytest.mark.parametrize(("literal", "home"), [
    ('"model.safetensors"', "saved_format.py"),
    ('"adapter_model.safetensors"', "saved_format.py"),
    ('"hftransfer_config.json"', "saved_format.py"),
    ('"head."', "saved_format.py"),
    ("FORMAT_VERSION = ", "saved_format.py"),
    ("BACKBONE_DIR = ", "saved_format.py"),
    ("def read_model_config(", "saved_format.py"),
])
def test_saved_format_facts_live_in_one_module(literal, home):
    # Resume checkpoints (training/checkpoint.py) have their own layout; they are not the saved model format.
    holders = sorted(p.relative_to(PACKAGE).as_posix() for p in SOURCES
                     if literal in p.read_text(encoding="utf-8") and p.name != "checkpoint.py")
    assert holders == [home]


def test_one_hub_id_rule():
    # Every module asks utils/hub_ids.is_repo_id; nobody compiles its own repo-id regex.
    pattern = re.compile(r"re\.compile\(r\"\^\(\?:?\[A-Za-z0-9\]")
    holders = sorted(p.relative_to(PACKAGE).as_posix() for p in SOURCES if pattern.search(p.read_text()))
    assert holders == ["utils/hub_ids.py"]
    from hftransfer.utils.hub_ids import is_repo_id

    assert is_repo_id("bert-base-uncased") and not is_repo_id("bert-base-uncased", namespaced=True)
    assert is_repo_id("org/name.v2", namespaced=True)
    for bad in ("org/name/extra", "-org/name", "org/../x", "a" * 97, "", None, "org/ name"):
        assert not is_repo_id(bad), bad


def test_every_error_hftransfer_raises_on_purpose_is_in_one_family():
    from hftransfer import errors
    from hftransfer.data import DataError, DataWarning
    from hftransfer.hub.push import HubPushError

    classes = [cls for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, Exception)]
    warnings = [cls for cls in classes if issubclass(cls, Warning)]
    assert all(issubclass(cls, HFTransferError) for cls in [*classes, DataError, HubPushError] if cls not in warnings)
    assert all(issubclass(cls, errors.HFTransferWarning) for cls in [*warnings, DataWarning])
    assert errors.PerformanceWarning in warnings


def test_cli_prints_hftransfer_errors_and_lets_bugs_raise(monkeypatch, capsys):
    from hftransfer import cli

    def fails_on_purpose(args):
        raise ConfigurationError("optim.lr=-1 is invalid: use a learning rate >= 0.")

    def has_a_bug(args):
        return {}["missing"]

    monkeypatch.setattr(cli, "_cmd_recipes", fails_on_purpose)
    assert cli.main(["recipes"]) == 2
    assert "hftransfer recipes: error: optim.lr=-1 is invalid" in capsys.readouterr().err
    monkeypatch.setattr(cli, "_cmd_recipes", has_a_bug)
    with pytest.raises(KeyError):
        cli.main(["recipes"])
    monkeypatch.setattr(cli, "_cmd_recipes", lambda args: (_ for _ in ()).throw(ValueError("a bug")))
    with pytest.raises(ValueError, match="a bug"):
        cli.main(["recipes"])


def test_registries_refuse_duplicates():
    from hftransfer.augment import AUGMENTATION_PRESETS, register_augmentation
    from hftransfer.backbones.packaged import PACKAGED_BACKBONES, register_packaged
    from hftransfer.methods import register_method
    from hftransfer.methods.full import FullConfig

    before = (dict(AUGMENTATION_PRESETS), dict(PACKAGED_BACKBONES))
    with pytest.raises(ConfigurationError, match="'default' is already registered"):
        register_augmentation("default")(lambda cfg: None)
    with pytest.raises(ConfigurationError, match=r"\['minilm'\] are already registered"):
        register_packaged("my-minilm", "some-package", "a copy", aliases=("minilm",))(lambda spec, **kw: None)
    with pytest.raises(ConfigurationError, match="already registered"):
        register_method("full", FullConfig)(type("Again", (), {}))
    assert (AUGMENTATION_PRESETS, PACKAGED_BACKBONES) == before


def test_private_repo_hint_names_the_token(monkeypatch):
    # The hub answers 404 for a private repo without a token; the error says how to authenticate.
    import huggingface_hub

    try:  # the HTTP client huggingface_hub's errors are built on: httpx2 (hub >= 2) or httpx (hub 1.x)
        import httpx2 as httpx
    except ImportError:
        httpx = pytest.importorskip("httpx")
    from huggingface_hub.errors import RepositoryNotFoundError

    from hftransfer.errors import ModelNameError
    from hftransfer.hub import fetch

    def not_found(*args, **kwargs):
        response = httpx.Response(404, request=httpx.Request("GET", "https://hub.invalid/api/models/me/secret"))
        raise RepositoryNotFoundError("404 Client Error", response=response)

    monkeypatch.setattr(fetch, "hub_reachable", lambda: True)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", not_found)
    with pytest.raises(ModelNameError, match=r"'me/secret' was not found.*private or gated.*HF_TOKEN.*hf auth login"):
        fetch.fetch_file("me/secret", "config.json")
