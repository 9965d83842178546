"""Prompt methods (prompt_tuning, p_tuning, prefix_tuning, vpt) and the token interface they use, on tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hftransfer import AutoTransfer
from hftransfer.errors import ConfigurationError
from hftransfer.training import Callback


TEXT_METHODS = {
    "prompt_tuning": {"num_virtual_tokens": 4},
    "prompt_tuning_text": {"num_virtual_tokens": 5, "init": "text", "init_text": "a good movie"},
    "p_tuning": {"num_virtual_tokens": 4, "encoder_hidden_size": 16},
    "prefix_tuning": {"num_virtual_tokens": 3},
    "prefix_tuning_projection": {"num_virtual_tokens": 3, "projection": True, "projection_hidden_size": 8},
    "prefix_tuning_kept_positions": {"num_virtual_tokens": 3, "prompt_positions": False},
    "prefix_tuning_activations": {"num_virtual_tokens": 3, "init": "activations"},
    "prefix_tuning_key_value": {"num_virtual_tokens": 3, "form": "key_value", "dropout": 0.1},
}
VISION_METHODS = {"vpt": {"num_tokens": 3}, "vpt_deep": {"num_tokens": 2, "deep": True, "dropout": 0.1}}
SENTENCES = ["the film was very dull and not fun", "good movie", "a great film"]


def method_of(key: str) -> str:
    for variant in ("_text", "_projection", "_deep", "_kept_positions", "_activations", "_key_value"):
        key = key.replace(variant, "")
    return key


@pytest.fixture(scope="module")
def models(tiny_models, tmp_path_factory) -> dict[str, str]:
    """The tiny backbones of conftest plus tiny RoBERTa, DistilBERT and DeiT folders (BERT's tokenizer)."""
    from transformers import (
        AutoTokenizer,
        DeiTConfig,
        DeiTModel,
        DistilBertConfig,
        DistilBertModel,
        RobertaConfig,
        RobertaModel,
        ViTImageProcessor,
    )

    root = tmp_path_factory.mktemp("prompt_models")
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["transformers_bert"])
    torch.manual_seed(0)
    text = {
        "roberta": RobertaModel(RobertaConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                              num_attention_heads=2, intermediate_size=37, pad_token_id=0,
                                              max_position_embeddings=40), add_pooling_layer=False),
        "distilbert": DistilBertModel(DistilBertConfig(vocab_size=tokenizer.vocab_size, dim=32, n_layers=2, n_heads=2,
                                                       hidden_dim=37, max_position_embeddings=64)),
    }
    out = {"bert": tiny_models["transformers_bert"], "timm_vit": "timm:test_vit", "timm_vit_reg": "timm:test_vit2",
           "timm_vit_map": "timm:test_vit3", "vit": tiny_models["transformers_vit"]}
    for name, model in text.items():
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        out[name] = str(root / name)
    deit_config = DeiTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=37)
    deit = DeiTModel(deit_config, add_pooling_layer=False)
    deit.save_pretrained(root / "deit")
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(root / "deit")
    out["deit"] = str(root / "deit")
    return out


TEXT_FAMILIES = ["bert", "roberta", "distilbert"]
VISION_FAMILIES = ["timm_vit", "timm_vit_reg", "timm_vit_map", "vit", "deit"]


def load(name: str, method: str | None = None, config: dict | None = None, **kwargs) -> AutoTransfer:
    return AutoTransfer.from_pretrained(name, num_labels=3, pretrained=not name.startswith("timm:"),
                                        method=method, method_config=config, **kwargs)


def image_batch(model: AutoTransfer, n: int = 2) -> dict[str, torch.Tensor]:
    size = model.preprocessor.data_config["input_size"][-1]
    return {"pixel_values": torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))}


def batch_of(model: AutoTransfer, texts=SENTENCES) -> dict[str, torch.Tensor]:
    return image_batch(model) if model.modality == "image" else dict(model.preprocess(list(texts)))


# --- the token interface ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", TEXT_FAMILIES + VISION_FAMILIES)
def test_token_interface_reproduces_the_backbone_forward(models, family):
    # embed -> blocks -> pool through the interface is the backbone's own forward, bit for bit.
    model = load(models[family]).eval()
    batch = batch_of(model)
    with torch.no_grad():
        expected = model.backbone(**batch)
        got = model.backbone.token_interface().forward(model.backbone.select_inputs(batch))
    assert torch.equal(expected, got)


def test_cnns_have_no_token_interface(tiny_models):
    assert load(tiny_models["timm_cnn"]).backbone.token_interface() is None


# --- which parameters train ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", TEXT_FAMILIES)
@pytest.mark.parametrize("key", list(TEXT_METHODS))
def test_text_prompts_get_gradients_and_nothing_else(models, family, key):
    _check_gradients(load(models[family], method_of(key), TEXT_METHODS[key]))


@pytest.mark.parametrize("family", VISION_FAMILIES)
@pytest.mark.parametrize("key", list(VISION_METHODS))
def test_visual_prompts_get_gradients_and_nothing_else(models, family, key):
    _check_gradients(load(models[family], "vpt", VISION_METHODS[key]))


def _check_gradients(model: AutoTransfer) -> None:
    model.train()
    model(**batch_of(model), labels=torch.tensor([0, 1, 2][: len(next(iter(batch_of(model).values())))])
          ).loss.backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("head.", "backbone.token_hook.")) for n in trainable), trainable
    assert any(n.startswith("backbone.token_hook.") for n in trainable)
    for name, param in model.named_parameters():
        if name in trainable:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        else:
            assert param.grad is None, name
    summary = model.trainable_summary()
    assert summary["trainable_params"] == sum(p.numel() for n, p in model.named_parameters() if n in trainable)
    assert 0 < summary["trainable_percent"] < 100


# --- masks, positions and pooling ------------------------------------------------------------------------------------


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("pooling", ["mean", "cls"])
@pytest.mark.parametrize("family", TEXT_FAMILIES)
@pytest.mark.parametrize("key", ["prompt_tuning", "p_tuning", "prefix_tuning", "prefix_tuning_key_value"])
def test_padding_does_not_change_a_sentence_s_features(models, family, key, pooling, attn):
    # The attention mask covers the virtual tokens: a short sentence padded in a batch has its unpadded features.
    model = load(models[family], method_of(key), TEXT_METHODS[key], pooling=pooling).eval()
    model.backbone.base_model().set_attn_implementation(attn)
    with torch.no_grad():
        alone = model.forward_features(**batch_of(model, ["good movie"]))
        padded = model.forward_features(**batch_of(model, SENTENCES))
    assert batch_of(model, SENTENCES)["attention_mask"][1].sum() < batch_of(model, SENTENCES)["input_ids"].shape[1]
    torch.testing.assert_close(padded[1:2], alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("key", ["prompt_tuning", "prefix_tuning"])
@pytest.mark.parametrize("pooling", ["mean", "cls", "pooler"])
def test_text_pooling_ignores_virtual_tokens(models, key, pooling):
    # Pooling sees the real tokens only: CLS stays the real [CLS], the mean runs over real unpadded tokens.
    model = load(models["bert"], method_of(key), TEXT_METHODS[key], pooling=pooling).eval()
    tokens = model.backbone.token_interface()
    batch = model.backbone.select_inputs(batch_of(model))
    count = TEXT_METHODS[key]["num_virtual_tokens"]
    with torch.no_grad():
        prompts, deep = model.backbone.token_hook(len(SENTENCES))
        seq = tokens.embed_tokens(batch, prompts)
        seq = tokens.run_blocks(seq, None if deep is None else lambda i, s: s if i == 0 else s.with_virtual(deep[i]))
        hidden, mask = seq.tokens, seq.mask
        assert (seq.num_prefix, seq.num_virtual) == (1, count)
        assert hidden.shape[1] == batch["input_ids"].shape[1] + count
        assert torch.equal(mask[:, 1:1 + count], torch.ones(len(SENTENCES), count, dtype=mask.dtype))
        real = torch.cat([hidden[:, :1], hidden[:, 1 + count:]], 1)
        real_mask = batch["attention_mask"].unsqueeze(-1).float()
        expected = {"cls": real[:, 0], "mean": (real * real_mask).sum(1) / real_mask.sum(1),
                    "pooler": model.backbone.base_model().pooler(real) if pooling == "pooler" else None}[pooling]
        torch.testing.assert_close(model.forward_features(**batch), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family", ["timm_vit_reg", "deit"])
def test_visual_prompts_sit_after_the_prefix_tokens_and_pooling_ignores_them(models, family):
    # Class/register/distillation tokens stay first; prompts get no position embedding; pooling skips them.
    model = load(models[family], "vpt", {"num_tokens": 3}).eval()
    tokens = model.backbone.token_interface()
    batch = image_batch(model)
    with torch.no_grad():
        plain = tokens.embed_tokens(batch)
        prompts, _ = model.backbone.token_hook(2)
        seq = tokens.embed_tokens(batch, prompts)
        prefix = plain.num_prefix
        assert prefix == (2 if family == "deit" else model.backbone.base_model().num_prefix_tokens)
        torch.testing.assert_close(seq.tokens[:, :prefix], plain.tokens[:, :prefix])
        hook_prompts = model.backbone.token_hook.prompts.expand(2, -1, -1)
        torch.testing.assert_close(seq.tokens[:, prefix:prefix + 3], hook_prompts)
        torch.testing.assert_close(seq.tokens[:, prefix + 3:], plain.tokens[:, prefix:])
        out = tokens.run_blocks(seq)
        pooled = tokens.pool(out)
        if family == "deit":  # cls pooling after the final layernorm
            expected = tokens.model.layernorm(out.tokens)[:, 0]
        else:  # timm avg pooling over the patch tokens only (then fc_norm)
            expected = tokens.model.fc_norm(tokens.model.norm(out.tokens)[:, prefix + 3:].mean(1))
        torch.testing.assert_close(pooled, expected, rtol=1e-5, atol=1e-6)


def test_deep_prompts_replace_the_previous_block_s_prompts(models):
    model = load(models["timm_vit"], "vpt", {"num_tokens": 2, "deep": True}).eval()
    hook, tokens = model.backbone.token_hook, model.backbone.token_interface()
    seen = []
    for block in tokens.blocks():
        block.register_forward_pre_hook(lambda mod, args: seen.append(args[0][:, 1:3].clone()))
    with torch.no_grad():
        model(**image_batch(model))
    assert len(seen) == len(tokens.blocks()) == hook.prompts.shape[0]
    for index, got in enumerate(seen):
        torch.testing.assert_close(got, hook.prompts[index].expand(2, -1, -1))


def test_max_length_leaves_room_for_virtual_tokens(models):
    # Tiny BERT has 64 positions: 20 virtual tokens leave 44 for the text; a batch stays within the positions.
    model = load(models["bert"], "prompt_tuning", {"num_virtual_tokens": 20})
    assert model.preprocessor.max_length == 44
    batch = model.preprocess([" ".join(["good"] * 200)])
    assert batch["input_ids"].shape[1] == 44
    model(**batch)
    roberta = load(models["roberta"], "prefix_tuning", {"num_virtual_tokens": 10})
    assert roberta.preprocessor.max_length == 40 - 1 - 10  # RoBERTa positions start after the padding index
    roberta(**roberta.preprocess([" ".join(["good"] * 200)]))
    with pytest.raises(ConfigurationError, match=r"num_virtual_tokens=62 leaves 2 of the 64 positions.*at most 61"):
        load(models["bert"], "prompt_tuning", {"num_virtual_tokens": 62})


@pytest.mark.parametrize("family, positions", [("bert", 64), ("roberta", 39), ("distilbert", 64)])
def test_max_length_never_exceeds_the_encoder_s_positions(models, family, positions, caplog):
    # Without any method too: the default max_length (128) is cut to what the encoder can embed, so a long text
    # predicts instead of failing in the position embeddings; a shorter max_length is kept.
    with caplog.at_level("WARNING", logger="hftransfer"):
        model = load(models[family]).eval()
    assert model.preprocessor.max_length == positions
    assert f"max_length 128 -> {positions}: the text encoder has {positions} positions" in caplog.text
    batch = model.preprocess([" ".join(["good"] * 200)])
    assert batch["input_ids"].shape[1] == positions
    assert model(**batch).logits.shape == (1, 3)
    assert load(models[family], max_length=16).preprocessor.max_length == 16


@pytest.mark.parametrize("family", TEXT_FAMILIES)
def test_prefix_prompts_without_positions_keep_the_text_where_it_was(models, family):
    # prompt_positions=false: block 0 sees the plain embedding of the text (its own positions) with the first
    # layer's prompts spliced in after [CLS] as they are; no position is used up, so max_length stays.
    plain = load(models[family])
    model = load(models[family], "prefix_tuning", {"num_virtual_tokens": 3, "prompt_positions": False}).eval()
    shifted = load(models[family], "prefix_tuning", {"num_virtual_tokens": 3})
    assert model.preprocessor.max_length == plain.preprocessor.max_length
    assert shifted.preprocessor.max_length == shifted.backbone.token_interface().max_positions - 3
    tokens, hook = model.backbone.token_interface(), model.backbone.token_hook
    seen = []
    tokens.blocks()[0].register_forward_pre_hook(lambda mod, args: seen.append(args[0].clone()))
    batch = model.backbone.select_inputs(batch_of(model))
    with torch.no_grad():
        model.forward_features(**batch)
        text = tokens.embed_tokens(batch).tokens
    torch.testing.assert_close(seen[0][:, :1], text[:, :1])
    torch.testing.assert_close(seen[0][:, 1:4], hook.prompts[0].expand(len(SENTENCES), -1, -1))
    torch.testing.assert_close(seen[0][:, 4:], text[:, 1:])


@pytest.mark.parametrize("family", TEXT_FAMILIES)
@pytest.mark.parametrize("prompt_positions", [True, False])
def test_prefix_activation_init_starts_each_layer_from_real_words(models, family, prompt_positions):
    # init=activations: block i's prompts are what init_text's words are entering block i of the frozen encoder;
    # the first layer's are their word embeddings when they enter as words (prompt_positions=true).
    config = {"num_virtual_tokens": 4, "init": "activations", "init_text": "a fine film", "prompt_positions":
              prompt_positions}
    model = load(models[family], "prefix_tuning", config).eval()
    tokenizer, tokens = model.preprocessor.tokenizer, model.backbone.token_interface()
    ids = tokenizer("a fine film", add_special_tokens=False)["input_ids"]
    ids = (ids * 4)[:4]
    batch = {"input_ids": torch.tensor([[tokenizer.cls_token_id, *ids, tokenizer.sep_token_id]])}
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    entering = []
    with torch.no_grad():
        tokens.run_blocks(tokens.embed_tokens(batch), lambda i, seq: entering.append(seq.tokens[0, 1:5]) or seq)
        words = model.backbone.base_model().get_input_embeddings()(batch["input_ids"])[0, 1:5]
    prompts = model.backbone.token_hook.prompts
    assert prompts.shape[0] == len(tokens.blocks()) > 1
    torch.testing.assert_close(prompts[0], words if prompt_positions else entering[0])
    for index in range(1, prompts.shape[0]):
        torch.testing.assert_close(prompts[index], entering[index])
    drawn = load(models[family], "prefix_tuning", {"num_virtual_tokens": 4, "init": "activations"})
    assert not torch.equal(drawn.backbone.token_hook.prompts, prompts)


KV_ATTENTION = "hftransfer_test_kv_prefix"


@pytest.mark.parametrize("family", TEXT_FAMILIES)
def test_key_value_prefixes_are_the_keys_and_values_every_real_token_attends_to(models, family):
    # Reference: the plain encoder whose attention function prepends each layer's learned keys and values to the
    # real ones (what P-Tuning v2's past_key_values do), written with torch's SDPA. Padded batch, arbitrary
    # prefixes (keys and values unrelated), text at its own positions.
    import torch.nn.functional as F
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    model = load(models[family], "prefix_tuning", {"num_virtual_tokens": 3, "form": "key_value",
                                                    "prompt_positions": False}).eval()
    hook = model.backbone.token_hook
    with torch.no_grad():
        hook.keys.normal_(0.0, 2.0)
        hook.values.normal_(0.0, 2.0)
    plain = load(models[family]).eval()
    tokens = plain.backbone.token_interface()
    owners = {}
    for index, block in enumerate(tokens.blocks()):
        key_layer = tokens.key_value_projections(block)[0]
        owners.update({id(m): index for m in block.modules() if any(c is key_layer for c in m.children())})

    def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        batch, heads, _, size = key.shape
        index = owners[id(module)]
        extra_k = hook.keys[index].view(-1, heads, size).transpose(0, 1).expand(batch, -1, -1, -1)
        extra_v = hook.values[index].view(-1, heads, size).transpose(0, 1).expand(batch, -1, -1, -1)
        key, value = torch.cat([extra_k, key], 2), torch.cat([extra_v, value], 2)
        if attention_mask is not None:
            attention_mask = F.pad(attention_mask, (3, 0), value=True)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, scale=scaling)
        return out.transpose(1, 2).contiguous(), None

    AttentionInterface.register(KV_ATTENTION, attention)
    AttentionMaskInterface.register(KV_ATTENTION, sdpa_mask)
    plain.backbone.base_model().set_attn_implementation(KV_ATTENTION)
    batch = plain.backbone.select_inputs(batch_of(plain))
    assert batch["attention_mask"].min() == 0  # padding is part of what is checked
    with torch.no_grad():
        expected = plain.backbone.forward_tokens(batch)
        got = model.backbone.forward_tokens(batch)
        without = model.backbone.token_interface().forward(batch)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert (got - without).abs().max() > 1e-2  # the prefixes matter


def test_key_value_prefixes_start_as_the_deep_prompt_tokens_they_were_drawn_as(models):
    # Keys and values begin as what each layer makes of hidden-state prompts: with the text at its own positions the
    # two forms compute the same function before training; then each layer's keys and values train apart.
    batch = batch_of(load(models["bert"]))
    logits = []
    for form in ("tokens", "key_value"):
        torch.manual_seed(0)
        model = load(models["bert"], "prefix_tuning", {"num_virtual_tokens": 3, "form": form,
                                                       "prompt_positions": False}).eval()
        logits.append(model(**batch).logits)
    torch.testing.assert_close(logits[0], logits[1], rtol=0, atol=1e-6)
    hook = model.backbone.token_hook
    assert hook.keys.shape == hook.values.shape == (2, 3, 32)
    assert not torch.allclose(hook.keys, hook.values)


def test_key_value_prefixes_follow_a_deep_copy(models):
    # The projections' forward hooks belong to the copy's own prefixes (soups and WiSE-FT copy models).
    import copy

    model = load(models["bert"], "prefix_tuning", {"num_virtual_tokens": 3, "form": "key_value"}).eval()
    batch = batch_of(model)
    before = model(**batch).logits
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.backbone.token_hook.values.add_(1.0)
    assert torch.equal(model(**batch).logits, before)
    assert not torch.allclose(twin(**batch).logits, before)


def test_key_value_prefixes_refuse_a_family_without_known_projections(models, monkeypatch):
    from hftransfer.backbones import transformers_tokens

    monkeypatch.setattr(transformers_tokens.TextTokens, "key_value_projections", lambda self, block: None)
    with pytest.raises(ConfigurationError, match="form='key_value' writes into every layer's key and value.*form: "
                                                 "tokens"):
        load(models["bert"], "prefix_tuning", {"form": "key_value"})


def test_left_padded_batches_are_refused(models):
    model = load(models["bert"], "prompt_tuning")
    model.preprocessor.tokenizer.padding_side = "left"
    with pytest.raises(ConfigurationError, match="left-padded.*padding_side = 'right'"):
        model(**batch_of(model))


def test_text_init_copies_the_word_embeddings(models):
    model = load(models["bert"], "prompt_tuning", {"num_virtual_tokens": 5, "init": "text", "init_text": "good movie"})
    ids = model.preprocessor.tokenizer("good movie", add_special_tokens=False)["input_ids"]
    words = model.backbone.base_model().get_input_embeddings().weight
    torch.testing.assert_close(model.backbone.token_hook.prompts.data, words[torch.tensor((ids * 3)[:5])])


# --- refusals and option errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("family, method, match", [
    ("timm_vit", "prompt_tuning", (r"'prompt_tuning' puts prompt tokens into transformers text encoders.*is an "
                                   r"image backbone\. Use vpt for vision transformers, or lora / adapter")),
    ("vit", "prefix_tuning", r"is an image backbone\. Use vpt \(deep=true\)"),
    ("bert", "vpt", r"'vpt' puts prompt tokens into vision transformers.*is a text backbone\. Use prompt_tuning"),
    ("cnn", "vpt", r"'vpt' inserts prompt tokens.*timm test_resnet.*no token sequence.*Use lora or adapter"),
])
def test_methods_refuse_backbones_they_cannot_act_on(models, tiny_models, family, method, match):
    name = tiny_models["timm_cnn"] if family == "cnn" else models[family]
    with pytest.raises(ConfigurationError, match=match):
        load(name, method)
    plain = load(name)
    with pytest.raises(ConfigurationError, match=match):
        plain.apply_method(method)
    assert plain.method.name == "full" and plain.backbone.token_hook is None


def test_unlisted_text_encoder_is_refused_naming_alternatives(tmp_path, models):
    from transformers import AutoTokenizer, DebertaV2Config, DebertaV2Model

    tokenizer = AutoTokenizer.from_pretrained(models["bert"])
    DebertaV2Model(DebertaV2Config(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
                                   num_attention_heads=2, intermediate_size=37)).save_pretrained(tmp_path / "deberta")
    tokenizer.save_pretrained(tmp_path / "deberta")
    with pytest.raises(ConfigurationError, match=r"model_type 'deberta-v2'.*Use lora or adapter"):
        load(str(tmp_path / "deberta"), "prefix_tuning")


@pytest.mark.parametrize("method, config, match", [
    ("prompt_tuning", {"init": "text"}, "init='text' needs init_text"),
    ("prompt_tuning", {"init_text": "hello"}, "only used with init='text'"),
    ("prompt_tuning", {"init": "vocab"}, r"init='vocab' is not supported"),
    ("prompt_tuning", {"num_virtual_tokens": 0}, "num_virtual_tokens must be >= 1; received 0"),
    ("prefix_tuning", {"init": "zeros"}, "choose one of"),
    ("prefix_tuning", {"init_text": "hello"}, "only used with init='activations'"),
    ("prefix_tuning", {"init": "activations", "projection": True}, "use one of the two"),
    ("prefix_tuning", {"form": "kv"}, r"form='kv' is not supported; choose one of \('tokens', 'key_value'\)"),
    ("prefix_tuning", {"form": "key_value", "projection": True}, "Use one of the two"),
    ("vpt", {"dropout": 1.0}, r"dropout must be in \[0, 1\); received 1.0"),
    ("vpt", {"num_token": 3}, r"Unknown method option\(s\) \['method.num_token'\]"),
])
def test_bad_options_name_the_option(method, config, match):
    from hftransfer.methods import get_method

    with pytest.raises(ValueError, match=match):
        get_method(method, config)


def test_prompts_cannot_be_merged_and_say_why(models):
    model = load(models["bert"], "prefix_tuning")
    with pytest.raises(ConfigurationError, match="cannot be merged into plain weights: its prompts are extra tokens"):
        model.merge_adapters()
    assert model.method.name == "prefix_tuning"


# --- saving ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family, key", [("bert", k) for k in TEXT_METHODS] + [("distilbert", "prefix_tuning")]
                         + [("vit", k) for k in VISION_METHODS] + [("deit", "vpt_deep")])
def test_saves_only_prompts_and_head_and_reloads_to_identical_logits(models, tmp_path, family, key):
    config = {**TEXT_METHODS, **VISION_METHODS}[key]
    model = load(models[family], method_of(key), config).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.1)
    batch = batch_of(model)
    expected = model(**batch).logits
    model.save_pretrained(tmp_path / "saved", full_weights=False)
    keys = set(load_file(tmp_path / "saved" / "adapter_model.safetensors"))
    assert {"head.fc.weight", "head.fc.bias"} < keys
    assert keys == {n for n, p in model.named_parameters() if p.requires_grad}
    assert not (tmp_path / "saved" / "model.safetensors").exists()
    saved = json.loads((tmp_path / "saved" / "hftransfer_config.json").read_text())
    assert saved["method"] == {"name": method_of(key), "config": model.method.config.to_dict()}
    assert saved["weights"] == "trained"
    loaded = AutoTransfer.from_pretrained(tmp_path / "saved").eval()
    assert loaded.method.name == method_of(key)
    torch.testing.assert_close(loaded(**batch).logits, expected, rtol=0, atol=1e-6)


def test_random_base_saves_full_weights_and_reloads(models, tmp_path):
    model = load(models["timm_vit_reg"], "vpt", {"num_tokens": 2, "deep": True}).eval()
    batch = image_batch(model)
    expected = model(**batch).logits
    model.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "model.safetensors").exists()
    torch.testing.assert_close(AutoTransfer.from_pretrained(tmp_path / "saved").eval()(**batch).logits, expected,
                               rtol=0, atol=1e-6)


@pytest.mark.parametrize("key", ["prompt_tuning", "p_tuning", "prefix_tuning"])
def test_text_prompts_train_without_the_frozen_encoder_s_dropout_unless_asked(models, key):
    from hftransfer.training.freezing import set_train_mode

    for backbone_dropout in (False, True):
        model = load(models["bert"], method_of(key), {**TEXT_METHODS[key], "backbone_dropout": backbone_dropout})
        assert model.backbone.model.config.hidden_dropout_prob > 0  # the tiny encoder has dropout to switch off
        set_train_mode(model, "all")
        batch = batch_of(model)
        first, second = model(**batch).logits, model(**batch).logits
        assert torch.equal(first, second) is not backbone_dropout
        assert model.head.training and model.backbone.token_hook.training
        assert model.backbone.model.training is backbone_dropout


# --- checkpointing, precision --------------------------------------------------------------------------------------


@pytest.mark.parametrize("family, key, train", [("timm_vit", "vpt_deep", False), ("vit", "vpt", False),
                                                ("bert", "prefix_tuning", True), ("bert", "prompt_tuning", False),
                                                ("bert", "prefix_tuning_key_value", True)])
def test_gradient_checkpointing_recomputes_blocks_and_keeps_the_gradients(models, family, key, train):
    # Also with the frozen backbone in eval mode (VPT), where transformers layers would not checkpoint themselves.
    grads, calls = [], []
    for enable in (False, True):
        torch.manual_seed(0)
        model = load(models[family], method_of(key), {**TEXT_METHODS, **VISION_METHODS}[key])
        model.train(train)
        model.backbone.set_grad_checkpointing(enable)
        block = model.backbone.token_interface().blocks()[0]
        inner = next(iter(block.children()))
        count = []
        inner.register_forward_hook(lambda *args, count=count: count.append(1))
        batch = batch_of(model)
        torch.manual_seed(1)
        model(**batch, labels=torch.arange(len(next(iter(batch.values())))) % 3).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        calls.append(len(count))
    assert calls == [1, 2]
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("family, key", [("timm_vit", "vpt_deep"), ("deit", "vpt"), ("bert", "prefix_tuning"),
                                         ("roberta", "p_tuning"), ("distilbert", "prefix_tuning_key_value")])
def test_bf16_autocast_trains_the_prompts(models, family, key):
    model = load(models[family], method_of(key), {**TEXT_METHODS, **VISION_METHODS}[key])
    batch = batch_of(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**batch, labels=torch.arange(len(next(iter(batch.values())))) % 3).loss
    loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if n.startswith("backbone.token_hook.")]
    assert grads and all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


# --- training through the engine -------------------------------------------------------------------------------------


class Watch(Callback):
    """Snapshots the backbone before training and records train/eval modes during it."""

    def on_train_begin(self, trainer):
        model = trainer.accelerator.unwrap_model(trainer.model)
        self.before = {k: v.clone() for k, v in model.state_dict().items()}
        self.modes = set()

    def on_step_end(self, trainer, state):
        model = trainer.accelerator.unwrap_model(trainer.model)
        self.modes.add((model.backbone.model.training, model.backbone.token_hook.training,
                        model.backbone.token_hook.dropout.training))


def test_vpt_training_changes_prompts_and_leaves_every_backbone_weight_bit_identical(tmp_path):
    import hftransfer

    watch = Watch()
    result = hftransfer.train({
        "recipe": "vpt", "method": {"num_tokens": 4, "deep": True, "dropout": 0.1},
        "model": {"name": "timm:test_vit2", "pretrained": False, "image_size": 32},
        "data": {"source": "sklearn_digits", "max_train_samples": 48, "max_eval_samples": 24},
        "epochs": 2, "batch_size": 16, "augment": "none", "progress_bar": False, "output_dir": str(tmp_path / "run"),
    }, callbacks=[watch])
    after = result.model.state_dict() if result.model is not None else load_file(result.model_dir /
                                                                                 "model.safetensors")
    changed = {k for k in watch.before if not torch.equal(watch.before[k], after[k].to(watch.before[k].dtype))}
    assert changed == {k for k in watch.before if k.startswith(("backbone.token_hook.", "head."))}
    assert "backbone.token_hook.prompts" in changed
    assert watch.modes == {(False, True, True)}  # frozen backbone in eval mode, prompts (and their dropout) train
    metrics = json.loads((Path(result.output_dir) / "metrics.json").read_text())
    assert metrics["recipe"] == "vpt"


def text_csv(path: Path, n: int = 48) -> Path:
    rows = ["text,label"]
    for i in range(n):
        positive = i % 2 == 0
        word = (["good", "great", "fun"] if positive else ["bad", "awful", "dull"])[i % 3]
        rows.append(f"the movie was very {word},{'positive' if positive else 'negative'}")
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("recipe, backbone_dropout", [("prompt_tuning", None), ("p_tuning", None),
                                                      ("prefix_tuning", None), ("prefix_tuning", True)])
def test_text_prompt_recipes_train_through_the_engine(models, tmp_path, recipe, backbone_dropout):
    import hftransfer

    csv = text_csv(tmp_path / "reviews.csv")
    method = {"num_virtual_tokens": 4} if backbone_dropout is None else {"num_virtual_tokens": 4,
                                                                          "backbone_dropout": backbone_dropout}
    watch = Watch()
    result = hftransfer.train({
        "recipe": recipe, "model": {"name": models["bert"]}, "method": method,
        "data": {"train": str(csv), "text_column": "text", "label_column": "label"},
        "epochs": 1, "batch_size": 16, "progress_bar": False, "output_dir": str(tmp_path / "run"),
    }, callbacks=[watch])
    # By default the frozen encoder trains in eval mode (no dropout); backbone_dropout=true keeps its train mode.
    assert watch.modes == {(bool(backbone_dropout), True, True)}
    saved = json.loads((result.model_dir / "hftransfer_config.json").read_text())
    assert saved["method"]["name"] == recipe
    assert saved["method"]["config"]["backbone_dropout"] is bool(backbone_dropout)
    log = (Path(result.output_dir) / "train.log").read_text()
    assert "trainable params:" in log
    AutoTransfer.from_pretrained(result.model_dir)


def test_the_default_trains_exactly_as_the_encoder_with_dropout_set_to_zero(models, tmp_path):
    # What the bench measured as a variant (model.config_overrides with the dropout probabilities 0) is the default.
    import hftransfer

    csv = text_csv(tmp_path / "reviews.csv")
    no_dropout = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    weights = []
    for name, method, model in [("default", {}, {}),
                                ("overrides", {"backbone_dropout": True}, {"config_overrides": no_dropout})]:
        result = hftransfer.train({
            "recipe": "prefix_tuning", "model": {"name": models["bert"], **model},
            "method": {"num_virtual_tokens": 4, **method},
            "data": {"train": str(csv), "text_column": "text", "label_column": "label"}, "seed": 3,
            "epochs": 2, "batch_size": 16, "progress_bar": False, "output_dir": str(tmp_path / name),
        })
        weights.append(load_file(result.model_dir / "model.safetensors"))
    assert weights[0].keys() == weights[1].keys() and any(k.startswith("backbone.token_hook.") for k in weights[0])
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
