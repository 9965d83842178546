"""Backbone features computed once (linear probing): later epochs train the head on cached tensors."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from hftransfer.methods.linear_probe import FEATURE_PRECISIONS
from hftransfer.utils.hardware import fast_bf16
from hftransfer.utils.io import load_state_dict, save_state_dict


logger = logging.getLogger(__name__)


class FeatureDataset(Dataset):
    def __init__(self, features: torch.Tensor, labels: torch.Tensor):
        self.features, self.labels = features, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"features": self.features[index], "labels": self.labels[index]}


def weights_fingerprint(module: torch.nn.Module) -> str:
    """A digest of every parameter and buffer of ``module`` (names, dtypes, shapes, bytes): a fine-tuned model shares
    its base's backbone spec, not its weights."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cache_key(model, split_fingerprint: str, extra: dict) -> str:
    """The feature cache's file key: the backbone (spec and actual weights), its preprocessing, the data and
    ``extra`` (split name, precision, ...)."""
    payload = json.dumps({"backbone": model.backbone.spec.to_dict(), "weights": weights_fingerprint(model.backbone),
                          "pre": model.preprocessor.to_dict(), "data": split_fingerprint, **extra},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def feature_precision(requested: str, mixed_precision: str | None, device: torch.device) -> str:
    """The precision frozen-backbone features are computed in: "bf16" or "fp32".

    "auto" (the default) takes bf16 wherever it is fast (a CPU with AMX / AVX-512 bf16, a bf16 GPU) whatever the
    training precision: the backbone only runs forward, the head trains on float32 copies of the features, and bf16
    features differ from fp32 ones by about 1e-2 relative, below what a linear head resolves. On other devices it
    follows the run's ``mixed_precision``.
    """
    if requested not in FEATURE_PRECISIONS:
        raise ValueError(f"method.feature_precision={requested!r} is invalid; choose one of {FEATURE_PRECISIONS}.")
    if requested != "auto":
        return requested
    return "bf16" if mixed_precision == "bf16" or fast_bf16(device) else "fp32"


@torch.inference_mode()
def extract_features(accelerator, model, loader, desc: str, progress: bool,
                     precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor]:
    """Run the frozen backbone over ``loader`` (sharded across processes) and gather features on every rank."""
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.eval()
    device_type = accelerator.device.type
    feats, labels = [], []
    for batch in tqdm(loader, desc=desc, disable=not (progress and accelerator.is_local_main_process)):
        y = batch.pop("labels")
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            f = unwrapped.forward_features(**batch)
        f, y = accelerator.gather_for_metrics((f.float().contiguous(), y))
        feats.append(f.cpu())
        labels.append(y.cpu())
    return torch.cat(feats), torch.cat(labels)


def cached_features(accelerator, model, loader, key: str, cache_dir: str | None, desc: str,
                    progress: bool, precision: str = "fp32") -> FeatureDataset:
    """Features from ``cache_dir/<key>.safetensors`` when present, else extracted (and stored there)."""
    path = Path(cache_dir) / f"features-{key}.safetensors" if cache_dir else None
    if path is not None and path.is_file():
        logger.info("Reusing cached features %s", path)
        tensors = load_state_dict(path)
        return FeatureDataset(tensors["features"], tensors["labels"])
    features, labels = extract_features(accelerator, model, loader, desc, progress, precision)
    if path is not None and accelerator.is_main_process:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_state_dict({"features": features, "labels": labels}, tmp)
        tmp.replace(path)
    return FeatureDataset(features, labels)
