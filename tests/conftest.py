"""Shared fixtures: tiny random backbones for every family, offline HF settings, optional real data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


# Offline and quiet before any HF import: tests never touch the real hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_hf_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.getbasetemp() / "hf_home"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(home / "datasets"))
    monkeypatch.setenv("HFTRANSFER_CACHE", str(home / "hftransfer"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent (a user's clone): real-data tests are skipped")
    return SHARED_DATA


def _tiny_bert_dir(root: Path) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = root / "tiny-bert"
    if folder.exists():
        return folder
    words = ["good", "bad", "movie", "great", "awful", "film", "the", "a", "is", "was", "not", "very", "fun", "dull"]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    folder.mkdir(parents=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    return folder


def _tiny_vit_dir(root: Path) -> Path:
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    folder = root / "tiny-vit"
    if folder.exists():
        return folder
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=37)
    ViTModel(config, add_pooling_layer=False).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, str]:
    """Model names for the tiny random backbones of each family/modality (no network)."""
    import torch

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("tiny_models")
    return {
        "timm_cnn": "timm:test_resnet",
        "timm_vit": "timm:test_vit",
        "transformers_vit": str(_tiny_vit_dir(root)),
        "transformers_bert": str(_tiny_bert_dir(root)),
    }


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def hub(tmp_path_factory, tiny_models):
    """One local hub-compatible server for the session, seeded with two base backbones: a timm ViT and a
    transformers BERT (with tokenizer), as ``helpers.HUB_BASES``; token ``helpers.HUB_TOKEN``."""
    import timm
    import torch
    from timm.models import save_for_hf

    from helpers import HUB_BASES, HUB_TOKEN
    from hub_server import start_hub

    root = tmp_path_factory.mktemp("hub")
    server = start_hub(root / "store", token=HUB_TOKEN)
    torch.manual_seed(0)
    save_for_hf(timm.create_model("test_vit", pretrained=False), str(root / "seed-vit"), safe_serialization=True)
    seeds = {HUB_BASES["timm"]: root / "seed-vit", HUB_BASES["bert"]: Path(tiny_models["transformers_bert"])}
    for repo_id, folder in seeds.items():
        server.create_repo(repo_id)
        server.upload_files(repo_id, {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()})
    yield server
    server.stop()
