"""Frozen features of each candidate backbone on a stratified sample of the training split, cached on disk.

The cache uses the linear-probe feature cache's format and keys (``features-<key>.safetensors`` holding ``features``
and ``labels``, :func:`hftransfer.training.feature_cache.cache_key`): when the sample is the whole training split, a
following ``linear_probe`` run with ``method.cache_dir`` pointing at the same folder reuses the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from hftransfer.backbones import ResolvedName, check_backbone_name, load_backbone, resolve_name
from hftransfer.errors import ConfigurationError, HFTransferError
from hftransfer.modeling import AutoTransfer
from hftransfer.saved_format import read_model_config
from hftransfer.utils.io import load_state_dict, save_state_dict


logger = logging.getLogger(__name__)

RANDOM_PREFIX = "random:"


@dataclass(frozen=True)
class Candidate:
    """A backbone to rank: ``name`` as ``AutoTransfer.from_pretrained`` takes it; ``pretrained=False`` is the
    random-init floor (written ``random:<name>`` on the command line)."""

    name: str
    pretrained: bool = True

    @property
    def label(self) -> str:
        return self.name if self.pretrained else RANDOM_PREFIX + self.name

    @classmethod
    def parse(cls, text: str | Candidate) -> Candidate:
        if isinstance(text, Candidate):
            return text
        if not isinstance(text, str) or not text.strip() or text.strip() == RANDOM_PREFIX:
            raise ConfigurationError(f"candidates holds {text!r}; give model names such as "
                                     f"'packaged:efficientnet_lite0' or '{RANDOM_PREFIX}timm:efficientnet_lite0' "
                                     "(random init).")
        text = text.strip()
        if text.startswith(RANDOM_PREFIX):
            return cls(text[len(RANDOM_PREFIX):], pretrained=False)
        return cls(text)


@dataclass
class CandidateFeatures:
    """One candidate's features on the sample, its source classifier (when it has one) and the extraction cost."""

    candidate: Candidate
    features: np.ndarray  # (N, D) float32
    labels: np.ndarray  # (N,) int64
    source_logits: np.ndarray | None  # (N, C_source) from the pretrained classifier, None without one
    seconds: float | None  # time of the forward pass when the features were computed (None: unknown)
    cached: bool  # True when read from the cache (no forward pass in this call)
    num_parameters: int  # backbone parameters (without any head)
    cache_path: Path | None
    precision: str


def check_candidates(candidates: list[Candidate]) -> None:
    """Resolve every name (unknown names, missing packages or folders fail here) before any data or forward pass."""
    labels = [c.label for c in candidates]
    if len(candidates) < 2:
        raise ConfigurationError(f"candidates={labels} holds {len(candidates)} model; ranking needs at least 2.")
    duplicates = sorted({x for x in labels if labels.count(x) > 1})
    if duplicates:
        raise ConfigurationError(f"candidates lists {duplicates} more than once; give each candidate once.")
    for candidate in candidates:
        _refuse_random_saved_model(candidate, check_backbone_name(candidate.name, pretrained=candidate.pretrained))


def _refuse_random_saved_model(candidate: Candidate, resolved: ResolvedName) -> None:
    """``random:<folder saved by hftransfer>`` would load the trained weights: refuse it, naming the base to use."""
    if candidate.pretrained or resolved.kind != "hftransfer":
        return
    base = "<its base backbone>"
    if resolved.source == "local":
        try:
            base = read_model_config(resolved.location, candidate.name, "")["backbone"]["name"]
        except (HFTransferError, KeyError, TypeError):
            pass
    raise ConfigurationError(
        f"candidates holds {candidate.label!r}, a model saved by hftransfer: it has no random init (its trained "
        f"weights would be ranked as the random floor). Give its base backbone instead: '{RANDOM_PREFIX}{base}'."
    )


def load_candidate(candidate: Candidate, image_size: int | None = None, max_length: int | None = None):
    """The candidate as an ``AutoTransfer`` and its pretrained classifier ``(weight, bias)`` (None without one).

    A backbone with a source classifier (a timm ImageNet model, a packaged EfficientNet) gives it for LEEP / NCE; one
    without (MiniLM, a random init, a model saved by hftransfer) gives None. Ranking reads the backbone's features
    only, so the model carries a fixed 2-label head that no score depends on.
    """
    resolved = resolve_name(candidate.name)
    _refuse_random_saved_model(candidate, resolved)
    source = None
    if resolved.kind == "hftransfer":
        model = AutoTransfer.from_pretrained(candidate.name, num_labels=2)
    else:
        backbone = load_backbone(resolved, pretrained=candidate.pretrained)
        head, backbone.pretrained_head = backbone.pretrained_head, None
        if head is not None:
            bias = head.bias.detach().double().numpy() if head.bias is not None else None
            source = (head.weight.detach().double().numpy(), bias)
        model = AutoTransfer(backbone, {0: "0", 1: "1"})
    if image_size is not None and model.modality == "image":  # as training's model.image_size does
        model.backbone.preprocessor = model.preprocessor.with_image_size(image_size)
    if max_length is not None and model.modality == "text":
        model.preprocessor.max_length = int(max_length)
    return model, source


def sample_indices(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    from hftransfer.data import stratified_subsample  # heavy: loads datasets

    return stratified_subsample(labels, size, seed)


def _sample_tag(indices: np.ndarray, total: int) -> dict:
    if len(indices) == total:
        return {}  # the whole split: the same key a linear_probe run computes
    digest = hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()[:16]
    return {"sample": digest}


def _loader(model, split, batch_size: int, seed: int):
    from hftransfer.training.loaders import (  # heavy: loads accelerate, timm
        ImageDataset,
        PadCollator,
        build_loader,
        tokenize_split,
    )

    if model.modality == "image":
        return build_loader(ImageDataset(split, model.transform(train=False), seed=seed), batch_size, shuffle=False,
                            seed=seed)
    tok = model.preprocessor.tokenizer
    dataset = tokenize_split(split, tok, model.preprocessor.max_length)
    lengths = [len(x) for x in dataset.columns["input_ids"]]
    return build_loader(dataset, batch_size, shuffle=False, seed=seed, lengths=lengths,
                        collate_fn=PadCollator(tok.pad_token_id or 0))


def candidate_features(candidate: Candidate, train_split, indices: np.ndarray, cache_dir: Path, *,
                       batch_size: int = 32, seed: int = 0, precision: str = "auto",
                       image_size: int | None = None, max_length: int | None = None,
                       progress: bool = True) -> CandidateFeatures:
    """Features of ``train_split`` rows ``indices`` from the frozen candidate, from the cache when present."""
    from accelerate import Accelerator  # heavy: loaded only when used

    from hftransfer.training.feature_cache import (  # heavy: loads accelerate, timm
        cache_key,
        extract_features,
        feature_precision,
    )

    with torch.random.fork_rng(devices=[]):  # a random init is drawn from ``seed``; the global RNG is left alone
        torch.manual_seed(seed)
        model, source_head = load_candidate(candidate, image_size, max_length)
    accelerator = Accelerator()
    precision = feature_precision(precision, None, accelerator.device)
    fingerprint = getattr(train_split, "_fingerprint", str(len(train_split)))
    init = {} if candidate.pretrained else {"init_seed": seed}
    key = cache_key(model, fingerprint, {"split": "train", "precision": precision,
                                         **_sample_tag(indices, len(train_split)), **init})
    path = Path(cache_dir) / f"features-{key}.safetensors"
    num_parameters = sum(p.numel() for p in model.backbone.parameters())
    if path.is_file():
        logger.info("Reusing cached features %s for %s", path, candidate.label)
        tensors = load_state_dict(path)
        with safe_open(str(path), framework="pt") as handle:
            # None for a file a linear_probe run wrote (it records no extraction time)
            seconds = json.loads((handle.metadata() or {}).get("hftransfer_rank", "{}")).get("seconds")
        features, labels, cached = tensors["features"], tensors["labels"], True
    else:
        split = train_split if len(indices) == len(train_split) else train_split.select(indices.tolist())
        model = model.to(accelerator.device)
        start = time.perf_counter()
        features, labels = extract_features(accelerator, model, _loader(model, split, batch_size, seed),
                                            f"features {candidate.label}", progress, precision)
        seconds, cached = time.perf_counter() - start, False
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_state_dict({"features": features, "labels": labels}, tmp,
                        metadata={"hftransfer_rank": json.dumps({"seconds": seconds, "candidate": candidate.label})})
        tmp.replace(path)
    features_np = features.float().numpy()
    logits = None
    if source_head is not None:
        weight, bias = source_head
        logits = features_np.astype(np.float64) @ weight.T + (bias if bias is not None else 0.0)
    return CandidateFeatures(candidate, features_np, labels.numpy().astype(np.int64), logits, seconds, cached,
                             num_parameters, path, precision)
