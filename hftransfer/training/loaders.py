"""``datasets`` splits -> DataLoaders: per-image transforms, text tokenized once, length-bucketed batches."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


if TYPE_CHECKING:
    from hftransfer.modeling import AutoTransfer


class EpochBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Deterministic batches for each epoch (seed + epoch), so an interrupted run resumes the same order.

    With ``lengths``, indices are shuffled, cut into chunks of 50 batches, each chunk sorted by length and the batches
    shuffled again: batches hold sentences of similar length (little padding) yet stay random.

    With ``sample_weights`` (and ``shuffle``), each epoch draws ``num_samples`` indices with replacement, index ``i``
    with probability proportional to ``sample_weights[i]`` (class-balanced sampling), from the same (seed, epoch)
    generator: every process draws the same order and a resumed epoch replays it.
    """

    def __init__(self, num_samples: int, batch_size: int, shuffle: bool, seed: int = 0,
                 lengths: Sequence[int] | None = None, chunk_batches: int = 50, tag_epoch: bool = False,
                 sample_weights: Sequence[float] | None = None):
        self.num_samples, self.batch_size, self.shuffle, self.seed = num_samples, batch_size, shuffle, seed
        self.tag_epoch = tag_epoch  # yield (epoch, index) pairs so datasets can seed per-sample randomness
        self.lengths = np.asarray(lengths) if lengths is not None else None
        self.chunk_batches = chunk_batches
        self.sample_weights = None
        if sample_weights is not None:
            weights = np.asarray(sample_weights, dtype=np.float64)
            if weights.shape != (num_samples,) or (weights < 0).any() or weights.sum() <= 0:
                raise ValueError(f"sample_weights must hold {num_samples} non-negative weights, not all zero.")
            self.sample_weights = weights / weights.sum()
        self.epoch = 0

    # Deliberately not named ``set_epoch``: accelerate calls ``set_epoch`` with its own iteration counter, which
    # restarts at 0 on a resumed (skip-batches) loader and would change the order after a resume.
    def use_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.shuffle and self.sample_weights is not None:
            order = rng.choice(self.num_samples, size=self.num_samples, replace=True, p=self.sample_weights)
        else:
            order = rng.permutation(self.num_samples) if self.shuffle else np.arange(self.num_samples)
        if self.lengths is not None:
            chunk = self.batch_size * self.chunk_batches if self.shuffle else self.num_samples
            order = np.concatenate([
                part[np.argsort(-self.lengths[part], kind="stable")]
                for part in np.array_split(order, max(1, math.ceil(len(order) / chunk)))
            ]) if len(order) else order
        batches = [order[i:i + self.batch_size].tolist() for i in range(0, len(order), self.batch_size)]
        if self.shuffle and self.lengths is not None:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        if self.tag_epoch:
            batches = [[(self.epoch, i) for i in batch] for batch in batches]
        yield from batches


@contextmanager
def intra_op_threads(n: int) -> Iterator[None]:
    """Run the block with at most ``n`` torch intra-op threads (restored afterwards)."""
    before = torch.get_num_threads()
    if before <= n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class ImageDataset(Dataset):
    """Rows of an image ``datasets.Dataset`` -> ``{"pixel_values", "labels"}`` through a transform.

    Random augmentations are seeded per sample from (seed, epoch, index): the same image gets the same crop in
    the same epoch whatever the number of workers or processes, and a resumed run replays them exactly (the
    global RNGs, which the DataLoader's prefetching would advance out of order, are left untouched).
    """

    def __init__(self, data, transform, seed: int = 0, cache_mb: float = 0):
        self.data, self.transform, self.seed = data, transform, seed
        self.labels = [int(x) for x in data["label"]]  # read once: row access would decode the image too
        # Decoded RGB images kept between epochs (JPEG/PNG decoding is a large share of a CPU step).
        self._cache: dict[int, Any] = {}
        self._cache_budget, self._cache_used = int(cache_mb * 2**20), 0

    def __len__(self) -> int:
        return len(self.data)

    def __getitems__(self, keys: list) -> list[dict[str, Any]]:
        """A whole batch (the DataLoader calls this when it exists), transformed on one intra-op thread.

        Per-image transforms are tiny tensor ops (ToTensor, Normalize on ~50k elements) that still open an OpenMP
        parallel region: with ``num_workers=0`` they run in the training process, whose pool has every core, and each
        op then waits for all threads to join. On a 2-core CPU with anything else running that cost ~20 ms per op
        (~45 ms per image instead of ~0.6 ms). DataLoader workers already run with one thread; this does the same
        in-process.
        """
        with intra_op_threads(1):
            return [self[key] for key in keys]

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        index = int(index)
        image = self._decoded(index)
        sample_seed = int(np.random.SeedSequence([self.seed, epoch, int(index)]).generate_state(1)[0])
        state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            random.seed(sample_seed)
            # The CPU generator only: torch.manual_seed also seeds every accelerator backend (~70 us per call on
            # a CUDA build, as much as the whole transform of a small image); transforms draw from this one.
            torch.default_generator.manual_seed(sample_seed)
            pixels = self.transform(image)
        random.setstate(state)
        return {"pixel_values": pixels, "labels": self.labels[index]}

    def _decoded(self, index: int):
        image = self._cache.get(index)
        if image is None:
            image = self.data[index]["image"]
            image = image if image.mode == "RGB" else image.convert("RGB")
            size = image.width * image.height * 3
            if self._cache_used + size <= self._cache_budget:
                image.load()
                self._cache[index] = image
                self._cache_used += size
        return image


class TokenizedDataset(Dataset):
    """Pre-tokenized text rows (python lists), padded per batch by :class:`PadCollator`."""

    def __init__(self, columns: dict[str, list], labels: Sequence[int]):
        self.columns, self.labels = columns, list(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = {k: v[index] for k, v in self.columns.items()}
        item["labels"] = self.labels[index]
        return item


class PadCollator:
    """Pads token lists to the longest in the batch (dynamic padding)."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        longest = max(len(it["input_ids"]) for it in items)
        batch: dict[str, torch.Tensor] = {"labels": torch.tensor([it["labels"] for it in items])}
        for key in items[0]:
            if key == "labels":
                continue
            fill = self.pad_token_id if key == "input_ids" else 0
            out = torch.full((len(items), longest), fill, dtype=torch.long)
            for row, it in enumerate(items):
                out[row, : len(it[key])] = torch.as_tensor(it[key], dtype=torch.long)
            batch[key] = out
        return batch


def balanced_sample_weights(labels: Sequence[int], num_labels: int) -> np.ndarray:
    """Per-row weights ``1 / count(class of row)``: every class is drawn equally often in expectation."""
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels, minlength=num_labels).astype(np.float64)
    return 1.0 / counts[labels]


def inverse_frequency_weights(labels: Sequence[int], num_labels: int) -> np.ndarray:
    """Class weights ``N / (K * count_k)`` (mean 1 over present classes; 0 for a class without rows)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_labels).astype(np.float64)
    present = counts > 0
    weights = np.zeros(num_labels)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


def tokenize_split(data, tokenizer, max_length: int) -> TokenizedDataset:
    """Tokenize a text split once (no padding): later epochs reuse the ids."""
    texts = list(data["text"])  # datasets 5 returns lazy Column objects; tokenizers want lists
    pairs = list(data["text_pair"]) if "text_pair" in data.column_names else None
    encoded = tokenizer(texts, pairs, truncation=True, max_length=max_length, padding=False)
    keep = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded]
    return TokenizedDataset({k: encoded[k] for k in keep}, [int(x) for x in data["label"]])


def build_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int, num_workers: int = 0,
                 lengths: Sequence[int] | None = None, collate_fn=None,
                 sample_weights: Sequence[float] | None = None) -> DataLoader:
    sampler = EpochBatchSampler(len(dataset), batch_size, shuffle, seed=seed, lengths=lengths,
                                tag_epoch=isinstance(dataset, ImageDataset), sample_weights=sample_weights)
    # Its own generator: creating a DataLoader iterator otherwise draws a seed from the global torch RNG, which
    # would shift dropout randomness when a resumed run starts its iterator at another moment.
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, collate_fn=collate_fn,
                      persistent_workers=num_workers > 0, generator=generator)


@dataclass
class SplitInputs:
    """A split as model inputs: its dataset, per-row token counts (text; for length bucketing) and collate function."""

    dataset: Dataset
    lengths: list[int] | None
    collate_fn: PadCollator | None


def split_inputs(split, model: AutoTransfer, *, train: bool = False, augment: str | None = "default", seed: int = 0,
                 cache_mb: float = 0) -> SplitInputs:
    """Images through ``model.transform(train, augment)`` (seeded per sample), text tokenized once and padded per
    batch."""
    if model.modality == "image":
        return SplitInputs(ImageDataset(split, model.transform(train=train, augment=augment), seed=seed,
                                        cache_mb=cache_mb), None, None)
    tok = model.preprocessor.tokenizer
    dataset = tokenize_split(split, tok, model.preprocessor.max_length)
    return SplitInputs(dataset, [len(x) for x in dataset.columns["input_ids"]], PadCollator(tok.pad_token_id or 0))


def split_loader(split, model: AutoTransfer, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                 num_workers: int = 0, train: bool = False, augment: str | None = "default", cache_mb: float = 0,
                 bucket_by_length: bool = True, sample_weights: Sequence[float] | None = None) -> DataLoader:
    """The one way a split becomes a DataLoader (training, validation, test, target evaluation, ``evaluate``)."""
    inputs = split_inputs(split, model, train=train, augment=augment, seed=seed, cache_mb=cache_mb)
    return build_loader(inputs.dataset, batch_size, shuffle=shuffle, seed=seed, num_workers=num_workers,
                        lengths=inputs.lengths if bucket_by_length else None, collate_fn=inputs.collate_fn,
                        sample_weights=sample_weights)
