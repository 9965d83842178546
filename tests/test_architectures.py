"""The architecture table (backbones/architectures.py): complete records, the only home of module names, and the one
source that targets, IA3, adapters and token interfaces read."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest
from torch import nn

import hftransfer
from hftransfer.backbones.architectures import (
    ARCHITECTURES,
    Architecture,
    cnn_block_pattern,
    ia3_feedforward_pattern,
    token_architecture,
)


PACKAGE = Path(hftransfer.__file__).resolve().parent
TABLE = PACKAGE / "backbones" / "architectures.py"


@pytest.mark.parametrize("key", list(ARCHITECTURES))
def test_every_family_has_the_fields_its_methods_need(key):
    arch = ARCHITECTURES[key]
    assert dataclasses.is_dataclass(arch) and arch.__dataclass_params__.frozen
    assert arch.name
    uses = [arch.lora_targets, arch.ia3_feedforward, arch.blocks, arch.cnn_blocks, arch.token_family]
    assert any(uses), f"{key} gives no method anything"
    for pattern in (arch.model_types, arch.lora_targets, arch.blocks, arch.cnn_blocks):
        if pattern is not None:
            re.compile(pattern)
    # LoRA defaults are picked by model type: one without the other is dead.
    assert (arch.model_types is None) == (arch.lora_targets is None), key
    # Bottleneck adapters need the block and all three branch points.
    if arch.blocks is not None:
        assert arch.attn_out and arch.mlp_out and arch.mlp_in, key
    else:
        assert arch.attn_out is arch.mlp_out is arch.mlp_in is None, key
    if arch.token_family is not None:
        assert arch.token_family in ("image", "text")
    # A transformers token interface needs the model types it serves and where their blocks are.
    if arch.token_model_types:
        assert arch.token_family and arch.layer_lists, key
    assert set(arch.position_offset_model_types) <= set(arch.token_model_types), key
    assert all(s and not s.startswith(".") for s in arch.ia3_feedforward), key


def test_families_do_not_overlap():
    types = [t for a in ARCHITECTURES.values() for t in a.token_model_types]
    assert len(types) == len(set(types)), "a model type has two token families"
    probes = ["bert", "roberta", "distilbert", "deberta-v2", "efficientnet_b0", "mobilenetv3_small_050", "vit"]
    for probe in probes:
        hits = [k for k, a in ARCHITECTURES.items() if a.model_types and re.match(a.model_types, probe)]
        assert len(hits) <= 1, f"{probe} matches {hits}"


def _module_names() -> set[str]:
    """The distinctive module names of the table: dotted paths and names with an underscore."""
    names = set()
    for arch in ARCHITECTURES.values():
        names |= {arch.attn_out, arch.mlp_out, *arch.ia3_feedforward, *arch.layer_lists}
        for pattern in (arch.lora_targets, arch.blocks, arch.cnn_blocks):
            names |= set(re.findall(r"[A-Za-z_][\w]*(?:\\\.[A-Za-z_]\w*)+|[a-z]+_[a-z_0-9]+", pattern or ""))
    names = {n.replace("\\.", ".") for n in names if n}
    return {n for n in names if "." in n or "_" in n}


def _string_constants(path: Path) -> list[str]:
    """String literals of ``path`` that are not docstrings (code, not prose)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docstrings]


def test_the_table_is_the_only_place_module_names_appear():
    names = _module_names()
    # The table really holds the names methods used to keep for themselves.
    assert {"attn.proj", "mlp.fc2", "attention.output.dense", "ffn.lin2", "conv_pwl", "q_lin", "query_proj",
            "encoder.layer", "transformer.layer", "dense_4h_to_h"} <= names
    sources = [p for layer in ("methods", "backbones") for p in sorted((PACKAGE / layer).rglob("*.py")) if p != TABLE]
    found = []
    for path in sources:
        for literal in _string_constants(path):
            for name in names:
                forms = (name, name.replace(".", r"\."))
                if any(re.search(r"(?<![\w.\\])" + re.escape(f) + r"(?![\w])", literal) for f in forms):
                    found.append(f"{path.relative_to(PACKAGE)}: {name!r} in {literal[:60]!r}")
    assert not found, "module names outside backbones/architectures.py:\n" + "\n".join(found)


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.mix = nn.Sequential()
        self.mix.add_module("out", nn.Linear(4, 4))
        self.ff = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
        self.ff.add_module("out", nn.Linear(8, 4))


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.stack = nn.ModuleList([_Block(), _Block()])


def test_methods_read_the_table(monkeypatch):
    """A family added to the table only is picked up by LoRA targets, IA3, adapters and token lookup."""
    from hftransfer.methods.adapter import find_sites
    from hftransfer.methods.targets import default_target_modules

    toy = _Toy()
    assert find_sites(toy, "houlsby") == ("", [])
    toy_family = Architecture(name="toy stack", model_types=r"^toy$", lora_targets=r".*\.mix\.out$",
                              ia3_feedforward=("ff.out",), blocks=r"(.*\.)?stack\.\d+", attn_out="mix.out",
                              mlp_out="ff.out", mlp_in="ff", token_family="text", token_model_types=("toy",),
                              layer_lists=("stack",))
    monkeypatch.setitem(ARCHITECTURES, "toy", toy_family)
    assert default_target_modules(toy, "toy") == ["stack.0.mix.out", "stack.1.mix.out"]
    assert default_target_modules(toy, "other") == []  # "stack" is no numbered container the fallback knows
    assert re.fullmatch(ia3_feedforward_pattern(), "stack.1.ff.out")
    family, sites = find_sites(toy, "parallel")
    assert family == "toy stack"
    assert [(s.module, s.input_from) for s in sites] == [("stack.0.ff.out", "stack.0.ff"),
                                                         ("stack.1.ff.out", "stack.1.ff")]
    assert token_architecture("toy", "text") is toy_family and token_architecture("toy", "image") is None
    monkeypatch.setitem(ARCHITECTURES, "toy", dataclasses.replace(toy_family, blocks=None, attn_out=None,
                                                                   mlp_out=None, mlp_in=None,
                                                                   cnn_blocks=r"stack\.\d+"))
    assert r"stack\.\d+" in cnn_block_pattern()
    assert find_sites(toy, "houlsby") == ("", [])  # blocks without a conv get no residual conv adapter


def test_known_families_resolve_as_before():
    assert token_architecture("deit", "image").name == "transformers ViT/DeiT"
    assert token_architecture("camembert", "text") is ARCHITECTURES["transformers_bert"]
    assert token_architecture("electra", "text") is None  # LoRA defaults and adapters only, no token interface
    assert token_architecture("vit", "text") is None
    for name in ("encoder.layer.3.output.dense", "blocks.2.mlp.fc2", "transformer.layer.0.ffn.lin2",
                 "blocks.1.0.conv_pwl", "layer2.0.conv3"):
        assert re.fullmatch(ia3_feedforward_pattern(), name), name
    assert not re.fullmatch(ia3_feedforward_pattern(), "blocks.2.mlp.fc1")
    for name in ("blocks.1.0", "layer3.1", "stages.2.blocks.0", "stages.1.0", "backbone.layer1.0"):
        assert re.fullmatch(cnn_block_pattern(), name), name
    assert not re.fullmatch(cnn_block_pattern(), "blocks.1")
