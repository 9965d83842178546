"""Bit-identical guard for engine refactors: seeded tiny training runs -> sha256 of weights and metrics.json.

    env OMP_NUM_THREADS=1 python bench/bit_identical.py --record FILE   # before a refactor
    env OMP_NUM_THREADS=1 python bench/bit_identical.py --check FILE    # after it: exit 1 on any difference
    env OMP_NUM_THREADS=1 python bench/bit_identical.py --self-check bench/results/bit_identical   # any machine

Each run trains in this process (tiny random timm / BERT backbones, ``sklearn_digits`` or a tiny text CSV, CPU,
fp32) and is summarised by the sha256 of its saved model state dict (sorted keys; name, dtype, shape and raw bytes
of every tensor) and of its ``metrics.json`` without timing fields (temporary paths replaced by ``<ROOT>``).
Bitwise results depend on the CPU, the thread count and the library versions: compare only files recorded on the
same machine with the same ``OMP_NUM_THREADS`` (the JSON holds a ``machine`` fingerprint; ``--check`` refuses a
mismatch). It also records a hash of every ``hftransfer`` source file, so a failed check names the modules that
changed since the recording (another engineer's edit outside the refactor shows up there).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


REPO = Path(__file__).resolve().parents[1]
TIMING_KEYS = {"train_time_s", "train_samples_per_s", "compile_time_s", "mixed_precision_auto"}

for _key, _value in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                     "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false",
                     "TRANSFORMERS_VERBOSITY": "error", "TQDM_DISABLE": "1"}.items():
    os.environ.setdefault(_key, _value)


# --- run configurations (the style of tests/helpers.py tiny_config and tests/test_domain_adaptation.py da_config) ---


def _set(config: dict, **overrides: Any) -> dict:
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return config


def tiny_config(out: Path, **overrides: Any) -> dict:
    config = {
        "recipe": "full",
        "model": {"name": "timm:test_convnext", "pretrained": False, "image_size": 32},
        "data": {"source": "sklearn_digits", "max_train_samples": 64, "max_eval_samples": 40},
        "optim": {"lr": 3e-3},
        "epochs": 2,
        "batch_size": 16,
        "augment": "none",
        "mixed_precision": "no",
        "output_dir": str(out),
        "progress_bar": False,
    }
    return _set(config, **overrides)


def text_csv(path: Path, n: int = 48) -> Path:
    words_pos, words_neg = ["good", "great", "fun"], ["bad", "awful", "dull"]
    rows = ["text,label"]
    for i in range(n):
        pos = i % 2 == 0
        word = (words_pos if pos else words_neg)[i % 3]
        rows.append(f"the movie was very {word},{'positive' if pos else 'negative'}")
    path.write_text("\n".join(rows) + "\n")
    return path


def tiny_bert_dir(folder: Path) -> Path:
    """The tiny BERT of tests/conftest.py, built from a fixed seed (same bytes every time)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(0)
    words = ["good", "bad", "movie", "great", "awful", "film", "the", "a", "is", "was", "not", "very", "fun", "dull"]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    folder.mkdir(parents=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    return folder


def target_files(root: Path) -> dict[str, str]:
    """Inverted digits as the unlabelled target and a labelled target evaluation part (as da_config)."""
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8), digits.target
    root.mkdir(parents=True, exist_ok=True)
    np.savez(root / "target.npz", x=255 - x[:400])
    np.savez(root / "target_eval.npz", x=255 - x[400:520], y=y[400:520])
    return {"target": str(root / "target.npz"), "target_eval": str(root / "target_eval.npz")}


def da_config(out: Path, files: dict[str, str], objective: dict, **overrides: Any) -> dict:
    return tiny_config(out, target={"source": files["target"]}, target_eval={"source": files["target_eval"]},
                       objective=objective, **overrides)


def run_specs(root: Path) -> dict[str, tuple[dict, int | None]]:
    """name -> (config, interrupt step or None). An interrupted run stops (KeyboardInterrupt) after that optimizer
    step and is trained again, resuming from its last checkpoint."""
    bert = tiny_bert_dir(root / "tiny-bert")
    csv = text_csv(root / "reviews.csv")
    files = target_files(root / "domains")
    out = root / "runs"
    text = {"data": {"source": str(csv), "max_train_samples": 40, "max_eval_samples": 8, "test": str(csv)},
            "model": {"name": str(bert), "pretrained": False, "max_length": 16}}
    resume = {"checkpoint_every_steps": 2, "model__head_dropout": 0.1, "augment": "default", "optim__lr": 1e-2}
    return {
        "full": (tiny_config(out / "full", augment="default", model__head_dropout=0.1), None),
        "linear_probe": (tiny_config(out / "linear_probe", recipe="linear_probe", model__name="timm:test_resnet"),
                         None),
        "lora": (tiny_config(out / "lora", recipe="lora", model__name="timm:test_vit"), None),
        "adapter": (tiny_config(out / "adapter", recipe="adapter", model__name="timm:test_vit"), None),
        # backbone_dropout: the behaviour the recording was made with (the default since 2026-12-05 is false, a
        # deliberate change of results that tests/test_prompts.py pins down); the run still guards the engine.
        "prefix_tuning": (tiny_config(out / "prefix_tuning", recipe="prefix_tuning", batch_size=8,
                                      method={"backbone_dropout": True}, **text), None),
        "text_full_class_weights": (tiny_config(out / "text_full", batch_size=8, class_weights="auto",
                                                sampler="balanced", **text), None),
        "vpt": (tiny_config(out / "vpt", recipe="vpt", model__name="timm:test_vit"), None),
        "dann": (da_config(out / "dann", files, {"name": "dann"}), None),
        "self_training": (da_config(out / "self_training", files, {"name": "self_training", "threshold": 0.5},
                                    model_selection="target_entropy"), None),
        "class_weights_mixup": (tiny_config(out / "class_weights", class_weights="auto", mixup_alpha=0.4,
                                            label_smoothing=0.1, model__name="timm:test_resnet"), None),
        "unfreeze_schedule": (tiny_config(out / "unfreeze", model__name="timm:test_resnet", epochs=3,
                                          unfreeze_schedule=[{"epoch": 0, "train": "head"},
                                                             {"epoch": 1, "train": "top:1"},
                                                             {"epoch": 2, "train": "all"}]), None),
        "resume_full": (tiny_config(out / "resume_full", **resume), 5),
        "resume_lora": (tiny_config(out / "resume_lora", recipe="lora", **resume), 5),
        "resume_dann": (da_config(out / "resume_dann", files, {"name": "dann"}, checkpoint_every_steps=2), 5),
        "uninterrupted_full": (tiny_config(out / "uninterrupted_full", **resume), None),
        "uninterrupted_lora": (tiny_config(out / "uninterrupted_lora", recipe="lora", **resume), None),
    }


# Runs that must give the same bits on any machine: an interrupted-and-resumed run and the same run uninterrupted.
TWINS = {"resume_full": "uninterrupted_full", "resume_lora": "uninterrupted_lora", "resume_dann": "dann"}
# Runs trained a second time in the same process by --self-check: the same bits (determinism, no leaked state).
RERUN = ("full", "lora", "prefix_tuning", "self_training")


def evaluate_specs(root: Path) -> dict[str, tuple[str, str, dict]]:
    """name -> (trained run to load, data, evaluate options): ``hftransfer evaluate`` of saved models."""
    return {"evaluate_image": ("full", str(root / "domains" / "target_eval.npz"), {"batch_size": 16}),
            "evaluate_text": ("prefix_tuning", str(root / "reviews.csv"), {"batch_size": 8})}


# --- hashing --------------------------------------------------------------------------------------------------------


def state_dict_sha256(model_dir: Path) -> str:
    import torch
    from safetensors.torch import load_file

    from hftransfer.saved_format import FULL_WEIGHTS, TRAINED_WEIGHTS

    found = [model_dir / n for n in (FULL_WEIGHTS, TRAINED_WEIGHTS) if (model_dir / n).is_file()]
    if not found:
        raise FileNotFoundError(f"no saved weights in {model_dir}")
    tensors = load_file(found[0])
    digest = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(-1).view(dtype=torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _strip_timing(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_timing(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [_strip_timing(v) for v in value]
    return value


def metrics_digest(path: Path, root: Path) -> tuple[str, dict]:
    text = path.read_text(encoding="utf-8").replace(str(root), "<ROOT>")
    metrics = _strip_timing(json.loads(text))
    canonical = json.dumps(metrics, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest(), metrics


def machine() -> dict[str, str]:
    import numpy
    import torch

    return {"platform": platform.platform(), "processor": platform.machine(), "python": platform.python_version(),
            "torch": torch.__version__, "numpy": numpy.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS", ""), "torch_threads": str(torch.get_num_threads())}


def source_hashes() -> dict[str, str]:
    return {str(p.relative_to(REPO)): hashlib.sha256(p.read_bytes()).hexdigest()[:16]
            for p in sorted((REPO / "hftransfer").rglob("*.py"))}


# --- running --------------------------------------------------------------------------------------------------------


def run_all(only: Callable[[str], bool] = lambda name: True) -> dict[str, dict]:
    import hftransfer
    from hftransfer.training import Callback

    class Interrupt(Callback):
        def __init__(self, step: int):
            self.step = step

        def on_step_end(self, trainer, state):
            if state["global_step"] == self.step:
                raise KeyboardInterrupt

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="hft-bitid-") as tmp:
        root = Path(tmp)
        os.environ["HF_DATASETS_CACHE"] = str(root / "hf_datasets")
        os.environ["HFTRANSFER_CACHE"] = str(root / "hftransfer_cache")
        for name, (config, interrupt) in run_specs(root).items():
            if not only(name):
                continue
            start = time.perf_counter()
            if interrupt is not None:
                try:
                    hftransfer.train(config, callbacks=[Interrupt(interrupt)])
                    raise RuntimeError(f"{name}: the run was not interrupted at step {interrupt}")
                except KeyboardInterrupt:
                    pass
            result = hftransfer.train(config)
            out = Path(result.output_dir)
            if interrupt is not None and "resumed from" not in (out / "train.log").read_text():
                raise RuntimeError(f"{name}: the second run did not resume")
            m_hash, metrics = metrics_digest(out / "metrics.json", root)
            results[name] = {"weights_sha256": state_dict_sha256(out / "model"), "metrics_sha256": m_hash,
                             "best_metric": metrics.get("best_metric"), "metrics": metrics}
            print(f"{name:26s} weights {results[name]['weights_sha256'][:16]} metrics {m_hash[:16]} "
                  f"best {metrics.get('best_metric')!r} ({time.perf_counter() - start:.1f}s)", flush=True)
        for name, (run, data, options) in evaluate_specs(root).items():
            if not only(name) or run not in results:
                continue
            start = time.perf_counter()
            evaluated = hftransfer.evaluate(str(root / "runs" / run / "model"), data, progress_bar=False, **options)
            record = {k: getattr(evaluated, k) for k in ("metrics", "per_class", "confusion_matrix", "num_samples")}
            digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()
            results[name] = {"weights_sha256": "", "metrics_sha256": digest, "metrics": record}
            print(f"{name:26s} evaluate metrics {digest[:16]} ({time.perf_counter() - start:.1f}s)", flush=True)
    return results


def _diff(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _diff(a.get(k, "<absent>"), b.get(k, "<absent>"),
                                                                    f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} -> {b!r}"]


def check(recorded: dict, current: dict, sources_then: dict[str, str]) -> list[str]:
    problems = []
    for name, rec in recorded.items():
        cur = current.get(name)
        if cur is None:
            continue
        for key in ("weights_sha256", "metrics_sha256"):
            if rec[key] != cur[key]:
                problems.append(f"{name}: {key} differs")
        problems += [f"{name}: metrics{d}" for d in _diff(rec["metrics"], cur["metrics"])[:10]]
    if problems:
        now = source_hashes()
        changed = sorted(k for k in set(now) | set(sources_then) if now.get(k) != sources_then.get(k))
        problems.append(f"hftransfer sources changed since the recording: {changed}")
    return problems


def record_name(fingerprint: dict[str, str]) -> str:
    """The file name of a recording made on the machine with this ``machine()`` fingerprint."""
    digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:12]
    return f"{fingerprint['cpu_capability'].lower()}-{digest}.json"


def self_check(stored_dir: Path | None) -> list[str]:
    """Checks that need no recording from elsewhere (see tests/test_bit_identical.py): twins agree, a second pass of
    :data:`RERUN` in this process agrees with the first; plus, when ``stored_dir`` holds a recording for this very
    machine, every run agrees with it."""
    first = run_all()
    problems = [f"twins {a} / {b}: {key} differs" for a, b in TWINS.items()
                for key in ("weights_sha256", "metrics_sha256") if first[a][key] != first[b][key]]
    print(f"twins: {len(TWINS)} pairs compared", flush=True)
    second = run_all(lambda name: name in RERUN)
    problems += [f"rerun {name}: {key} differs" for name in RERUN
                 for key in ("weights_sha256", "metrics_sha256") if first[name][key] != second[name][key]]
    print(f"rerun: {len(RERUN)} runs compared", flush=True)
    stored = (stored_dir / record_name(machine())) if stored_dir is not None else None
    if stored is not None and stored.is_file():
        recorded = json.loads(stored.read_text())
        problems += check(recorded["runs"], first, recorded["sources"])
        print(f"stored: compared {len(recorded['runs'])} runs with {stored.name}", flush=True)
    else:
        print(f"stored: no recording for this machine ({record_name(machine())})", flush=True)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--record", type=Path, metavar="FILE", help="write the hashes of every run to FILE")
    mode.add_argument("--check", type=Path, metavar="FILE", help="compare with FILE; exit 1 on any difference")
    mode.add_argument("--self-check", type=Path, nargs="?", const=Path("-"), metavar="DIR",
                      help="twins and a rerun agree, and so does DIR's recording for this machine if there is one")
    parser.add_argument("--only", nargs="*", default=None, help="run only these names")
    parser.add_argument("--save", type=Path, metavar="FILE", help="with --check: also write this run's hashes here")
    args = parser.parse_args(argv)
    only = (lambda n: n in args.only) if args.only else (lambda n: True)
    if args.self_check is not None:
        problems = self_check(None if str(args.self_check) == "-" else args.self_check)
        for line in problems:
            print("DIFF", line)
        print("self-check: " + ("bit-identical" if not problems else "DIFFERENT"))
        return 1 if problems else 0
    if args.check:
        recorded = json.loads(args.check.read_text())
        if recorded["machine"] != machine():
            print(f"machine differs from the recording:\n  then {recorded['machine']}\n  now  {machine()}\n"
                  "bitwise results are only comparable on the same machine and thread count.", file=sys.stderr)
            return 2
        current = run_all(only)
        if args.save:
            args.save.write_text(json.dumps({"machine": machine(), "sources": source_hashes(), "runs": current},
                                            indent=1, sort_keys=True))
        problems = check(recorded["runs"], current, recorded["sources"])
        for line in problems:
            print("DIFF", line)
        compared = len(set(current) & set(recorded["runs"]))
        print(f"{compared} runs compared with the recording: " + ("bit-identical" if not problems else "DIFFERENT"))
        return 1 if problems else 0
    sources = source_hashes()
    runs = run_all(only)
    tmp = args.record.with_name(args.record.name + ".tmp")
    tmp.write_text(json.dumps({"machine": machine(), "sources": sources, "runs": runs}, indent=1, sort_keys=True))
    tmp.replace(args.record)
    print(f"recorded {len(runs)} runs to {args.record}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
