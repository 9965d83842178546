"""Parameter-efficient methods on tiny random backbones of every family: ``adapter`` and the PEFT catalogue.

Every method x family it supports: gradients reach exactly the trained parameters, a trained-weights-only save
reloads to identical logits, mergeable methods merge with the same outputs; refusals name what works instead.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import hftransfer
from hftransfer import AutoTransfer
from hftransfer.errors import ConfigurationError
from hftransfer.methods import METHODS, get_method
from hftransfer.methods.adapter import ADAPTER_ATTR
from hftransfer.methods.peft_base import PeftMethod
from hftransfer.recipes import get_recipe, list_recipes
from hftransfer.training import TrainConfig

from helpers import tiered


REPO = Path(__file__).resolve().parents[1]
FAMILIES = ["timm_cnn", "timm_effnet", "timm_vit", "bert", "distilbert", "hf_vit"]
CATALOGUE = sorted(name for name, entry in METHODS.items() if issubclass(entry.method_cls, PeftMethod))  # all PEFT
METHODS_UNDER_TEST = ["adapter", *CATALOGUE]
MERGEABLE = CATALOGUE
# What each method cannot take (the rest of the matrix must work).
REFUSED = {("vera", "timm_cnn"), ("vera", "timm_effnet")}
SUPPORTED = [(m, f) for m in METHODS_UNDER_TEST for f in FAMILIES if (m, f) not in REFUSED]


def _tiny_distilbert_dir(root: Path, bert_dir: Path) -> Path:
    from transformers import DistilBertConfig, DistilBertModel

    folder = root / "tiny-distilbert"
    if not folder.exists():
        vocab = (bert_dir / "vocab.txt").read_text().split()
        DistilBertModel(DistilBertConfig(vocab_size=len(vocab), dim=32, n_layers=2, n_heads=2, hidden_dim=37,
                                         max_position_embeddings=64)).save_pretrained(folder)
        for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            if (bert_dir / name).is_file():
                (folder / name).write_bytes((bert_dir / name).read_bytes())
    return folder


def _tiny_gpt2_dir(root: Path, bert_dir: Path) -> Path:
    from transformers import GPT2Config, GPT2Model

    folder = root / "tiny-gpt2"
    if not folder.exists():
        GPT2Model(GPT2Config(vocab_size=32, n_embd=32, n_layer=1, n_head=2, n_positions=64)).save_pretrained(folder)
        for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            if (bert_dir / name).is_file():
                (folder / name).write_bytes((bert_dir / name).read_bytes())
    return folder


@pytest.fixture(scope="module")
def bases(tiny_models, tmp_path_factory) -> dict[str, str]:
    """Pretrained (random but saved) bases that a trained-weights-only save can refer to and reload."""
    import timm
    from timm.models import save_for_hf

    root = tmp_path_factory.mktemp("method_bases")
    torch.manual_seed(0)
    out = {}
    for family, arch in (("timm_cnn", "test_resnet"), ("timm_effnet", "test_efficientnet"), ("timm_vit", "test_vit")):
        save_for_hf(timm.create_model(arch, pretrained=False), str(root / arch), safe_serialization=True)
        out[family] = f"local-dir:{root / arch}"
    out["bert"] = tiny_models["transformers_bert"]
    out["hf_vit"] = tiny_models["transformers_vit"]
    out["distilbert"] = str(_tiny_distilbert_dir(root, Path(tiny_models["transformers_bert"])))
    out["gpt2"] = str(_tiny_gpt2_dir(root, Path(tiny_models["transformers_bert"])))
    return out


def batch(model: AutoTransfer) -> dict[str, torch.Tensor]:
    if model.modality == "image":
        size = model.preprocessor.to_dict()["data_config"]["input_size"]
        return {"pixel_values": torch.randn(2, *size, generator=torch.Generator().manual_seed(0))}
    return dict(model.preprocess(["a good movie", "the film was very dull and not fun"]))


def perturb_trained(model: AutoTransfer, scale: float = 0.05) -> None:
    """Move every trained parameter off its init (zero-initialised updates would make round trips trivial)."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * scale)


def build(bases, family: str, method: str, **config) -> AutoTransfer:
    return AutoTransfer.from_pretrained(bases[family], num_labels=3, method=method, method_config=config or None)


@pytest.mark.parametrize(("method", "family"), tiered(SUPPORTED))
def test_gradients_reach_exactly_the_trained_parameters(bases, method, family):
    model = build(bases, family, method)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained == {n for n, _ in model.named_parameters() if model.method.is_trained_parameter(n)}
    added = trained - {n for n in trained if n.startswith("head.")}
    assert added, f"{method} on {family} trains nothing besides the head"
    marker = f".{ADAPTER_ATTR}." if method == "adapter" else f".{model.method.param_prefix}"
    assert all(marker in n for n in added), sorted(added)[:5]
    perturb_trained(model)
    model.train()
    model(**batch(model), labels=torch.tensor([0, 2])).loss.backward()
    for name, param in model.named_parameters():
        assert (param.grad is not None) == param.requires_grad, name
    assert any(float(model.get_parameter(n).grad.abs().sum()) > 0 for n in added)


@pytest.mark.parametrize(("method", "family"), tiered(SUPPORTED))
def test_trained_weights_save_reloads_to_identical_logits(bases, tmp_path, method, family):
    model = build(bases, family, method).eval()
    base_logits = _logits(model)
    perturb_trained(model)
    logits = _logits(model)
    assert not torch.allclose(logits, base_logits), "perturbing the trained weights changed nothing"
    model.save_pretrained(tmp_path / "m", full_weights=False)
    keys = set(load_file(tmp_path / "m" / "adapter_model.safetensors"))
    assert keys == {n for n, _ in model.named_parameters() if model.method.is_trained_parameter(n)}
    loaded = AutoTransfer.from_pretrained(tmp_path / "m").eval()
    assert loaded.method.name == method
    torch.testing.assert_close(_logits(loaded, batch(model)), logits, rtol=0, atol=1e-6)
    assert loaded.trainable_summary() == model.trainable_summary()


def _logits(model: AutoTransfer, inputs: dict | None = None) -> torch.Tensor:
    with torch.no_grad():
        return model(**(inputs or batch(model))).logits


@pytest.mark.parametrize(("method", "family"), tiered([(m, f) for m, f in SUPPORTED if m in MERGEABLE]))
def test_merge_keeps_outputs_and_leaves_plain_weights(bases, method, family):
    model = build(bases, family, method).eval()
    perturb_trained(model, scale=0.1)
    inputs = batch(model)
    before = _logits(model, inputs)
    features = _features(model, inputs)
    plain = build(bases, family, "full").eval()
    change = float((_features(plain, inputs) - features).abs().max())
    assert change > 1e-3 * float(features.abs().max()), "the method changed nothing to merge"
    model.merge_adapters()
    assert model.method.name == "full"
    prefix = f".{get_method(method).param_prefix}"
    assert not any(prefix in n for n, _ in model.named_parameters())
    assert {n for n, _ in model.named_parameters()} == {n for n, _ in plain.named_parameters()}
    torch.testing.assert_close(_features(model, inputs), features, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(_logits(model, inputs), before, rtol=1e-4, atol=1e-5)


def _features(model: AutoTransfer, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return model.forward_features(**inputs)


@pytest.mark.parametrize("family", ["timm_cnn", "bert"])
def test_adapter_refuses_to_merge_and_says_why(bases, family):
    model = build(bases, family, "adapter")
    with pytest.raises(ConfigurationError, match="nonlinear"):
        model.merge_adapters()
    assert model.method.name == "adapter"
    with pytest.raises(ConfigurationError, match="nonlinear"):
        model.push_to_hub("me/never-uploaded", merge=True)


@pytest.mark.parametrize("family", ["timm_cnn", "timm_effnet"])
def test_vera_on_a_cnn_is_refused_naming_what_works(bases, family):
    with pytest.raises(ConfigurationError) as err:
        build(bases, family, "vera")
    message = str(err.value)
    assert "Linear" in message and "Conv2d" in message
    works = message.split("Methods that work on this backbone:")[1]
    for name in ("lora", "ia3", "adapter", "full"):
        assert name in works
    assert "vera" not in works


def test_boft_leaves_the_c_and_cxx_compiler_variables_as_they_were(bases, monkeypatch):
    # PEFT's BOFT layers set CC=gcc CXX=gcc to build a CUDA extension and leave them set when that fails (no CUDA):
    # a later model.compile child then built inductor kernels with gcc, which do not load.
    import os

    monkeypatch.setenv("CXX", "g++")
    monkeypatch.delenv("CC", raising=False)
    model = build(bases, "timm_cnn", "boft")
    assert any("boft_" in name for name, _ in model.named_parameters())
    assert os.environ["CXX"] == "g++" and "CC" not in os.environ


def test_pre_flight_check_runs_before_any_change_to_the_model(bases):
    model = AutoTransfer.from_pretrained(bases["timm_cnn"], num_labels=2)
    before = {n for n, _ in model.named_modules()}
    with pytest.raises(ConfigurationError, match="vera"):
        model.apply_method("vera")
    assert model.method.name == "full" and {n for n, _ in model.named_modules()} == before


def test_adapter_on_a_family_outside_its_rule_table_is_refused(bases):
    # GPT-2 blocks (h.N with Conv1D projections) are in no rule: the message lists the families and what works.
    with pytest.raises(ConfigurationError) as err:
        AutoTransfer.from_pretrained(bases["gpt2"], num_labels=2, method="adapter")
    message = str(err.value)
    assert "rule table" in message and "DistilBERT" in message and "full" in message.split("work on this")[1]


def test_targets_a_method_cannot_take_are_refused_by_name(bases):
    with pytest.raises(ConfigurationError, match=r"conv1 \(Conv2d\)"):
        build(bases, "timm_cnn", "vera", target_modules=["conv1"])
    with pytest.raises(ConfigurationError, match="matched no module"):
        build(bases, "bert", "ia3", target_modules=["nope"])


@pytest.mark.parametrize(("method", "options", "match"), [
    ("adapter", {"placement": "sideways"}, "placement"),
    ("adapter", {"reduction_factor": 0}, "reduction_factor"),
    ("adapter", {"non_linearity": "swishy"}, "non_linearity"),
    ("boft", {"block_size": 3}, "block_size"),
    ("loha", {"r": 0}, "r must be"),
    ("ia3", {"rank": 4}, "Unknown method option"),
])
def test_bad_method_options_name_the_option(method, options, match):
    with pytest.raises(ValueError, match=match):
        get_method(method, options)


@pytest.mark.parametrize(("placement", "per_block"), [("houlsby", 2), ("pfeiffer", 1), ("parallel", 1)])
@pytest.mark.parametrize("family", ["timm_vit", "bert", "distilbert", "hf_vit"])
def test_adapter_placements_start_from_the_pretrained_function(bases, family, placement, per_block):
    plain = build(bases, family, "full").eval()
    model = build(bases, family, "adapter", placement=placement).eval()
    model.head.load_state_dict(plain.head.state_dict())
    inputs = batch(model)
    # up-projections start at zero: the adapted model computes exactly the pretrained function.
    torch.testing.assert_close(_logits(model, inputs), _logits(plain, inputs), rtol=0, atol=0)
    sites = [n for n, _ in model.named_modules() if n.endswith(ADAPTER_ATTR)]
    blocks = len(model.backbone.model.blocks) if family == "timm_vit" else 2  # the tiny transformers have 2
    assert len(sites) == per_block * blocks
    perturb_trained(model)
    assert not torch.allclose(_logits(model, inputs), _logits(plain, inputs))


def test_adapter_placements_compute_what_they_claim(bases):
    # timm ViT block: houlsby adds A(attn.proj(x)) to the attention output; parallel adds A(mlp input) to the MLP.
    houlsby = build(bases, "timm_vit", "adapter", placement="houlsby").eval()
    perturb_trained(houlsby)
    block = houlsby.backbone.model.blocks[0]
    x = torch.randn(2, 5, block.attn.proj.in_features)
    raw = block.attn.proj.forward(x)  # .forward skips the hooks
    torch.testing.assert_close(block.attn.proj(x), raw + getattr(block.attn.proj, ADAPTER_ATTR)(raw))
    parallel = build(bases, "timm_vit", "adapter", placement="parallel").eval()
    perturb_trained(parallel)
    mlp = parallel.backbone.model.blocks[1].mlp
    x = torch.randn(2, 5, mlp.fc1.in_features)
    raw = mlp.fc2.forward(mlp.norm(mlp.act(mlp.fc1(x))))
    torch.testing.assert_close(mlp(x), raw + getattr(mlp.fc2, ADAPTER_ATTR)(x))
    # a deep copy (push_to_hub(merge=...), EMA, ...) keeps working on its own adapters
    twin = copy.deepcopy(parallel)
    torch.testing.assert_close(_logits(twin), _logits(parallel))


def test_rule_table_covers_deit_and_roberta():
    from transformers import DeiTConfig, DeiTModel, RobertaConfig, RobertaModel

    from hftransfer.methods.adapter import find_sites

    deit = DeiTModel(DeiTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=2, intermediate_size=37))
    family, sites = find_sites(deit, "houlsby")
    assert family == "transformers ViT/DeiT" and [s.module for s in sites][:2] == ["layers.0.attention.o_proj",
                                                                                    "layers.0.mlp.fc2"]
    roberta = RobertaModel(RobertaConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=37))
    family, sites = find_sites(roberta, "parallel")
    assert family.startswith("transformers BERT/RoBERTa") and len(sites) == 1
    assert (sites[0].module, sites[0].input_from) == ("encoder.layer.0.output.dense", "encoder.layer.0.intermediate")


@pytest.mark.parametrize("family", ["timm_effnet", "timm_cnn"])
def test_cnn_adapters_are_residual_convs_after_every_block(bases, family):
    model = build(bases, family, "adapter")
    inner = model.backbone.model
    blocks = [n for n, m in inner.named_modules() if hasattr(m, ADAPTER_ATTR)]
    expected = [n for n, _ in inner.named_modules() if re.fullmatch(r"blocks\.\d+\.\d+|layer\d+\.\d+", n)]
    assert blocks == expected
    adapter = getattr(inner.get_submodule(blocks[0]), ADAPTER_ATTR)
    assert isinstance(adapter.down, torch.nn.Conv2d) and adapter.down.kernel_size == (1, 1)
    assert float(adapter.up.weight.abs().sum()) == 0.0


@pytest.mark.parametrize("family", ["timm_vit", "bert", "timm_effnet"])
@pytest.mark.parametrize("placement", ["houlsby", "parallel"])
def test_adapter_gradient_checkpointing_gives_the_same_gradients(bases, family, placement):
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = build(bases, family, "adapter", placement=placement).train()
        perturb_trained(model)
        model.backbone.set_grad_checkpointing(checkpointing)
        model(**batch(model), labels=torch.tensor([0, 1])).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("method", "family"), [("adapter", "bert"), ("adapter", "timm_effnet"),
                                                ("adapter", "timm_vit"), ("ia3", "bert"), ("loha", "timm_effnet")])
def test_bf16_autocast_trains_the_method_parameters(bases, method, family):
    model = build(bases, family, method, **({"placement": "parallel"} if family == "timm_vit" else {})).train()
    perturb_trained(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**batch(model), labels=torch.tensor([0, 1]))
    assert out.logits.dtype == torch.bfloat16
    out.loss.backward()
    trained = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("head.")]
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in trained)
    assert sum(float(p.grad.abs().sum()) for p in trained) > 0


def test_norms_train_only_when_asked(bases):
    for method in ("adapter", "ia3"):
        off = build(bases, "timm_effnet", method)
        on = build(bases, "timm_effnet", method, train_norms=True)
        norms = [n for n, p in on.named_parameters() if p.requires_grad and ".bn" in n]
        assert norms and not any(p.requires_grad for n, p in off.named_parameters() if ".bn" in n)


# --- one vocabulary: recipes, defaults, listing ----------------------------------------------------------------------


def test_every_method_is_a_recipe_with_its_supported_backbones_listed(capsys):
    from hftransfer.cli import main

    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert set(METHODS) <= set(list_recipes())
    for name, entry in METHODS.items():
        block = out.split(f"\n{name} ")[1] if not out.startswith(f"{name} ") else out
        assert entry.method_cls.supported_backbones in block.split("\n\n")[0]
        assert f"example: recipe: {name}" in out
    assert "text backbones: optim.lr=2e-05" in out and "text backbones: optim.lr=5e-05" in out  # lp_ft, full
    # The launch commands work from a wheel install (no recipes/ scripts); vpt's example backbone is a ViT.
    assert "python -m hftransfer.recipes --config" in out and "accelerate launch -m hftransfer.recipes" in out
    assert "recipes/" not in out.replace("recipes/configs/", "")
    vpt = out.split("\nvpt ")[1].split("\n\n")[0]
    assert "model: {name: google/vit-base-patch16-224}  (a hub model)" in vpt and "MiniLM" not in vpt
    assert "recipes/configs/minilm_sst2_adapter.yaml" in out and "recipes/configs/minilm_sst2_ia3.yaml" in out
    # Objectives show the defaults they take for a text backbone (the registration's, not a copy).
    from hftransfer.objectives import OBJECTIVES

    dann = out.split("\ndann ")[1].split("\nmmd ")[0]
    assert f"per-modality defaults: {OBJECTIVES['dann'].modality_defaults_line()}" in dann
    assert "text: source_warmup=0.5" in dann and "strong_augment=null" in out


def test_per_family_defaults_are_decided_once_and_the_user_wins():
    # full: lr 5e-5 on text transformers, 3e-4 otherwise; the user's value wins over either
    full = TrainConfig.from_dict({"recipe": "full"})
    assert full.for_modality("text").optim.lr == 5e-5 and full.for_modality("image").optim.lr == 3e-4
    assert TrainConfig.from_dict({"recipe": "full", "optim": {"lr": 1e-3}}).for_modality("text").optim.lr == 1e-3
    # ia3 (1e-2): one rate for every backbone, chosen on SST-2 train and on held-back CIFAR-10 train images
    # (bench/results/peft_defaults.md), so no per-family entry; adapter: 3e-3 on images, 1e-3 on text (SST-2's whole
    # train set)
    for recipe, image_lr, text_lr in (("adapter", 3e-3, 1e-3), ("ia3", 1e-2, 1e-2)):
        generic = TrainConfig.from_dict({"recipe": recipe})
        assert generic.method == {} and generic.optim.lr == image_lr and generic.optim.name == "adamw"
        assert generic.for_modality("image").optim.lr == image_lr
        assert generic.for_modality("text").optim.lr == text_lr
        mine = TrainConfig.from_dict({"recipe": recipe, "optim": {"lr": 2e-3}})
        assert mine.for_modality("text").optim.lr == mine.for_modality("image").optim.lr == 2e-3
    assert get_recipe("ia3").family_defaults == {}


@pytest.mark.parametrize(("options", "message"), [
    ({"family_defaults": {"text": {"batch_size": 8}}}, r"family_defaults\['text'\] sets \['batch_size'\]"),
    ({"family_defaults": {"audio": {"epochs": 2}}}, r"keys \['audio'\] must be among \['text', 'image'\]"),
    ({"defaults": {"method": {"cache_features": True}}}, "restates method.cache_features=True, the default of"),
    ({"family_defaults": {"image": {"method": {"nope": 1}}}}, "sets method.nope, which ProbeConfig does not have"),
], ids=["not-per-family", "unknown-family", "restated-default", "unknown-option"])
def test_registration_refuses_defaults_that_do_not_belong_there(options, message):
    # A method's own defaults live once, in its config dataclass; per-family values only where they can differ.
    from dataclasses import dataclass

    from hftransfer.methods import register_method
    from hftransfer.methods.linear_probe import LinearProbeConfig

    @dataclass
    class ProbeConfig(LinearProbeConfig):
        pass

    with pytest.raises(ConfigurationError, match=message):
        register_method("refused_test", ProbeConfig, **options)
    assert "refused_test" not in METHODS


def test_registered_method_defaults_never_restate_the_config_dataclass():
    # e.g. num_virtual_tokens lives in the prompt methods' dataclasses only, and every method is its own recipe.
    from hftransfer.recipes import RECIPES

    assert list_recipes() == sorted(METHODS) == sorted(RECIPES)
    for name, entry in METHODS.items():
        recipe = get_recipe(name)
        assert recipe is entry and recipe.method == name
        defaults = entry.config_cls()
        for values in [entry.defaults, *entry.family_defaults.values()]:
            for key, value in (values.get("method") or {}).items():
                assert getattr(defaults, key) != value, (name, key)


def test_a_method_registration_is_its_recipe():
    # Adding a method = one module + one @register_method (with its training defaults) + its import line.
    from dataclasses import dataclass

    from hftransfer.methods import MethodConfig, register_method
    from hftransfer.methods.linear_probe import LinearProbe

    @dataclass
    class ProbeConfig(MethodConfig):
        pass

    register_method("probe_only_test", ProbeConfig)(type("ProbeOnly", (LinearProbe,), {"__doc__": "Test probe."}))
    register_method("probe_tuned_test", ProbeConfig, defaults={"optim": {"lr": 0.5}},
                    family_defaults={"image": {"epochs": 7}})(type("ProbeTuned", (LinearProbe,), {}))
    try:
        assert {"probe_only_test", "probe_tuned_test"} <= set(list_recipes())
        recipe = get_recipe("probe_only_test")
        assert (recipe.method, recipe.defaults, recipe.description) == ("probe_only_test", {}, "Test probe.")
        assert TrainConfig.from_dict({"recipe": "probe_only_test"}).optim.lr == TrainConfig().optim.lr
        tuned = TrainConfig.from_dict({"recipe": "probe_tuned_test"})
        assert tuned.optim.lr == 0.5 and tuned.epochs == TrainConfig().epochs
        assert tuned.for_modality("image").epochs == 7 and tuned.for_modality("text") is tuned
    finally:
        METHODS.pop("probe_only_test")
        METHODS.pop("probe_tuned_test")
    with pytest.raises(ValueError, match="Unknown recipe 'probe_only_test'"):
        get_recipe("probe_only_test")


@pytest.mark.parametrize(("recipe", "model_name"), [("adapter", "timm:test_convnext"), ("ia3", "timm:test_convnext"),
                                                    ("loha", "timm:test_efficientnet")])
def test_methods_train_through_the_engine(tmp_path, recipe, model_name):
    from helpers import tiny_config

    result = hftransfer.train(tiny_config(tmp_path, recipe=recipe, epochs=1, **{"model.name": model_name}))
    model = AutoTransfer.from_pretrained(result.model_dir)
    assert model.method.name == recipe
    saved = TrainConfig.from_yaml(result.output_dir / "config.yaml")
    if recipe == "adapter":  # the method's default bottleneck, as saved
        assert saved.method == {} and model.method.config.reduction_factor == 4
    card = (result.model_dir / "README.md").read_text()
    assert f"recipe '{recipe}' (see" in card


# --- adapter through accelerate launch (2 processes) and a SIGKILL-and-resume run -----------------------------------


@pytest.mark.integration
def test_adapter_two_process_run_matches_single_process(tmp_path):
    # accelerate launch --multi_gpu --num_processes 2 (gloo on CPU): same weights and metrics as one process.
    from helpers import launch_single_and_two_process, tiny_config

    base = {"recipe": "adapter", "model.name": "timm:test_convnext", "epochs": 2, "optim.name": "sgd",
            "optim.lr": 0.05, "checkpoint_every_steps": 2, "method": {"placement": "houlsby"}}
    m1, m2, w1, w2 = launch_single_and_two_process(tmp_path, tiny_config(tmp_path / "single", **base),
                                                   tiny_config(tmp_path / "double", **base))
    for r1, r2 in zip(m1["history"], m2["history"]):
        assert r1["train_loss"] == pytest.approx(r2["train_loss"], rel=1e-3)
    adapters = [k for k in w1 if f".{ADAPTER_ATTR}.up." in k]
    assert adapters and any(float(w1[k].abs().sum()) > 0 for k in adapters)  # the adapters did train
    for key in w1:
        torch.testing.assert_close(w1[key], w2[key], rtol=1e-3, atol=1e-4)


@pytest.mark.integration
def test_adapter_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path):
    import json
    import os

    from helpers import RESUME_SCRIPT, tiny_config

    script = tmp_path / "run.py"
    script.write_text(RESUME_SCRIPT)
    common = {"recipe": "adapter", "epochs": 3, "checkpoint_every_steps": 2, "model.head_dropout": 0.1,
              "augment": "default", "method": {"dropout": 0.1, "placement": "parallel"}}
    clean, killed = tiny_config(tmp_path / "clean", **common), tiny_config(tmp_path / "killed", **common)
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    subprocess.run([sys.executable, str(script), json.dumps(clean), "0"], check=True, env=env, capture_output=True)
    first = subprocess.run([sys.executable, str(script), json.dumps(killed), "7"], env=env, capture_output=True)
    assert first.returncode == -9, first.stderr[-2000:]
    assert max(p.name for p in (Path(killed["output_dir"]) / "checkpoints").iterdir()) == "step_00000006"
    second = subprocess.run([sys.executable, str(script), json.dumps(killed), "0"], env=env, capture_output=True,
                            text=True)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from" in (Path(killed["output_dir"]) / "train.log").read_text()
    wa = load_file(Path(clean["output_dir"]) / "model" / "model.safetensors")
    wb = load_file(Path(killed["output_dir"]) / "model" / "model.safetensors")
    assert wa.keys() == wb.keys() and any(f".{ADAPTER_ATTR}." in k for k in wa)
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=0)
    ma = json.loads((Path(clean["output_dir"]) / "metrics.json").read_text())
    mb = json.loads((Path(killed["output_dir"]) / "metrics.json").read_text())
    assert ma["final_eval"] == mb["final_eval"]


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("recipe", ["adapter", "ia3"])
def test_methods_train_with_gpu_mixed_precision(tmp_path, recipe, precision):
    # fp16 / bf16 autocast on a GPU (skipped on CPU-only machines): trains, saves, reloads with the same method.
    from helpers import tiny_config

    result = hftransfer.train(tiny_config(tmp_path, recipe=recipe, mixed_precision=precision, epochs=1))
    assert result.history[-1]["train_loss"] == result.history[-1]["train_loss"]  # not NaN
    assert AutoTransfer.from_pretrained(result.model_dir).method.name == recipe
