"""Backbone features computed once (linear probing): later epochs train the head on cached tensors."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
from torch.utils.data import Dataset

from hftransfer.utils.io import load_state_dict, save_state_dict


logger = logging.getLogger(__name__)


class FeatureDataset(Dataset):
    def __init__(self, features: torch.Tensor, labels: torch.Tensor):
        self.features, self.labels = features, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"features": self.features[index], "labels": self.labels[index]}


def cache_key(model, split_fingerprint: str, extra: dict) -> str:
    payload = json.dumps({"backbone": model.backbone.spec.to_dict(), "pre": model.preprocessor.to_dict(),
                          "data": split_fingerprint, **extra}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


@torch.inference_mode()
def extract_features(accelerator, model, loader, desc: str, progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the frozen backbone over ``loader`` (sharded across processes) and gather features on every rank."""
    from tqdm.auto import tqdm

    unwrapped = accelerator.unwrap_model(model)
    unwrapped.eval()
    feats, labels = [], []
    for batch in tqdm(loader, desc=desc, disable=not (progress and accelerator.is_local_main_process)):
        y = batch.pop("labels")
        with accelerator.autocast():
            f = unwrapped.forward_features(**batch)
        f, y = accelerator.gather_for_metrics((f.float().contiguous(), y))
        feats.append(f.cpu())
        labels.append(y.cpu())
    return torch.cat(feats), torch.cat(labels)


def cached_features(accelerator, model, loader, key: str, cache_dir: str | None, desc: str,
                    progress: bool) -> FeatureDataset:
    """Features from ``cache_dir/<key>.safetensors`` when present, else extracted (and stored there)."""
    path = Path(cache_dir) / f"features-{key}.safetensors" if cache_dir else None
    if path is not None and path.is_file():
        logger.info("Reusing cached features %s", path)
        tensors = load_state_dict(path)
        return FeatureDataset(tensors["features"], tensors["labels"])
    features, labels = extract_features(accelerator, model, loader, desc, progress)
    if path is not None and accelerator.is_main_process:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_state_dict({"features": features, "labels": labels}, tmp)
        tmp.replace(path)
    return FeatureDataset(features, labels)
