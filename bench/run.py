#!/usr/bin/env python
"""hftransfer vs the tools users would use instead, side by side on this machine.

    python bench/run.py --mode quick                 # a few minutes: subsets, low resolution, 1-2 epochs
    python bench/run.py --mode full                  # the accuracy figures (long: hours on a 2-core CPU)
    python bench/run.py --mode full --only text      # one half; --rows REGEX re-runs matching rows only
    python bench/run.py --mode full --rows '^sst2/adapter/hftransfer$' --seeds 3 --first-seed 1   # seeds 1 and 2

Seed 0 of a row is the row itself (id unchanged, torch seed 42); ``--seeds N`` adds the training rows' seeds 1..N-1 as
rows ``<id>/seed<i>`` (torch seed 42 + i), which RESULTS.md summarises as mean +- std beside the one-seed tables.

Every row (one tool x one method x one dataset) runs in its own subprocess so its peak RSS is its own; the hftransfer
row and its peer run back to back. Results merge into ``--out``/results.json (rows keyed by mode and id, so a partial
re-run replaces only what it ran) and RESULTS.md / accuracy_vs_time.png are re-rendered from all stored rows.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any


BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from hftransfer.methods import METHODS  # noqa: E402

from common import (  # noqa: E402
    MemoryMonitor,
    children_cpu_seconds,
    cpu_busy_fraction,
    machine_info,
    offline_env,
    proc_stat_busy_seconds,
    row_provenance,
    wait_for_quiet,
    write_json,
)


# ------------------------------------------------------------------------------------------------------ the suite

TEXT_LR = {"full": 1e-4, "lora": 1e-3, "linear_probe": 3e-3}  # picked on an 8k-sentence subset (1 epoch)
VISION_LR = {"full": 0.01, "lora": 0.01, "linear_probe": 0.01}
# Parameter-efficient rows (issue #10), default method options; the adapter's learning rate is its registered text
# default (chosen by bench/peft_defaults.py), as are ia3's and p_tuning's; the others' come from the methods' papers /
# recipes.
TEXT_LR.update({m: METHODS[m].defaults_for("text")["optim"]["lr"]
                for m in ("adapter", "ia3", "p_tuning", "prefix_tuning")})
TEXT_LR.update({"prompt_tuning": 3e-2})
VISION_LR.update({"adapter": 0.01, "ia3": 0.01, "loha": 0.01})
TEXT_PEFT_ROWS = {"adapter": False, "ia3": True, "prompt_tuning": False, "prefix_tuning": True,
                  "p_tuning": False}  # method -> has a peer
VISION_PEFT_ROWS = ("adapter", "ia3", "loha")  # hymenoptera only; the tutorial-loop peer has no such methods
QV = ["query", "value"]


def _pair(base: dict[str, Any], **extra: Any) -> list[dict[str, Any]]:
    spec = {**base, **extra}
    return [{**spec, "tool": "hftransfer"}, {**spec, "tool": "peer"}]


def build_rows(mode: str) -> list[dict[str, Any]]:
    """The rows of one mode. ``id`` = dataset/method/tool; a pair shares dataset/method.

    ``smoke`` is the wiring check of tests/test_bench.py: minuscule data, seconds per row, numbers meaningless.
    """
    if mode == "smoke":
        return _smoke_rows()
    quick = mode == "quick"
    rows: list[dict[str, Any]] = []

    # --- text: MiniLM on SST-2 (bf16 autocast for both tools) -------------------------------------------------
    if quick:
        text = {"kind": "text", "dataset": "sst2-2k", "max_train": 2000, "epochs": 1, "batch_size": 32,
                "mixed_precision": "bf16"}
    else:
        text = {"kind": "text", "dataset": "sst2", "max_train": None, "epochs": 2, "batch_size": 32,
                "mixed_precision": "bf16"}
    rows += _pair(text, method="lora", lr=TEXT_LR["lora"], lora_targets=QV)
    # The peer's head: BERT's pretrained (frozen) pooler + a new classifier, instead of mean pooling.
    rows.append({**text, "tool": "hftransfer", "method": "lora", "variant": "pooler-head", "lr": TEXT_LR["lora"],
                 "lora_targets": QV, "pooling": "pooler"})
    rows.append({**text, "tool": "hftransfer", "method": "lora", "variant": "default-targets",
                 "lr": TEXT_LR["lora"], "lora_targets": None})
    rows.append({**text, "tool": "hftransfer", "method": "lora", "variant": "grad-ckpt", "lr": TEXT_LR["lora"],
                 "lora_targets": QV, "gradient_checkpointing": True})
    rows += _pair(text, method="full", lr=TEXT_LR["full"])
    if not quick:  # the accuracy goal with a longer, gentler schedule (hftransfer only)
        rows.append({**text, "tool": "hftransfer", "method": "full", "variant": "3ep-lr5e-5", "epochs": 3,
                     "lr": 5e-5})
    for method, has_peer in TEXT_PEFT_ROWS.items():
        if has_peer:
            rows += _pair(text, method=method, lr=TEXT_LR[method])
        else:
            rows.append({**text, "tool": "hftransfer", "method": method, "lr": TEXT_LR[method]})
    if not quick:  # issue 22, "with defaults": the recipes' default 3 epochs, beside full's 3ep row
        for method in ("adapter", "prefix_tuning"):
            rows.append({**text, "tool": "hftransfer", "method": method, "variant": "3ep", "epochs": 3,
                         "lr": TEXT_LR[method]})
    if not quick:  # issue 22: each layer's prompts start as real words' hidden states (a candidate default)
        rows.append({**text, "tool": "hftransfer", "method": "prefix_tuning", "variant": "activations",
                     "lr": TEXT_LR["prefix_tuning"], "method_options": {"init": "activations"}})
    if not quick:  # issue 22: the former default (the frozen encoder's dropout on), beside today's default
        for method in ("prefix_tuning", "prompt_tuning"):
            rows.append({**text, "tool": "hftransfer", "method": method, "variant": "backbone-dropout",
                         "lr": TEXT_LR[method], "method_options": {"backbone_dropout": True}})
    lp = {**text, "epochs": 10}
    if not quick:  # the peer runs the frozen backbone 10x: a 10k-sentence subset keeps it under an hour
        lp.update(dataset="sst2-10k", max_train=10000)
    rows += _pair(lp, method="linear_probe", lr=TEXT_LR["linear_probe"])

    # --- fixed length (issue 13): every text fills 128 tokens, so padding cannot help ---------------------------
    rows += fixed_length_rows(quick)

    # --- vision: EfficientNet-Lite0, fp32 (+ channels_last for hftransfer) --------------------------------------
    if quick:
        hym = {"kind": "vision", "dataset": "hymenoptera", "image_size": 128, "epochs": 2, "batch_size": 32}
        cifar = {"kind": "vision", "dataset": "cifar10-1k", "image_size": 64, "epochs": 1, "batch_size": 32,
                 "max_train": 1000, "max_eval": 500}
    else:
        hym = {"kind": "vision", "dataset": "hymenoptera", "image_size": 224, "epochs": 10, "batch_size": 32}
        cifar = {"kind": "vision", "dataset": "cifar10", "image_size": 96, "epochs": 3, "batch_size": 32,
                 "max_train": None, "max_eval": None}
    for ds in (hym, cifar):
        rows.append({"kind": "bare", "tool": "bare", "dataset": ds["dataset"], "method": "forward+backward",
                     "image_size": ds["image_size"], "batch_size": ds["batch_size"],
                     "min_time": 6.0 if quick else 15.0})
        for method in ("full", "lora"):
            rows += _pair(ds, method=method, lr=VISION_LR[method])
        rows.append({**ds, "tool": "hftransfer", "method": "lora", "variant": "grad-ckpt", "lr": VISION_LR["lora"],
                     "gradient_checkpointing": True})
        rows += _pair({**ds, "epochs": 10}, method="linear_probe", lr=VISION_LR["linear_probe"])
        if ds is hym:
            rows += [{**ds, "tool": "hftransfer", "method": m, "lr": VISION_LR[m]} for m in VISION_PEFT_ROWS]
            # issue 13: torch.compile at full resolution, against the eager row above and the bare model
            rows.append({**ds, "tool": "hftransfer", "method": "full", "variant": "compile", "lr": VISION_LR["full"],
                         "compile": True})
            rows.append({"kind": "bare", "tool": "bare", "dataset": ds["dataset"], "method": "forward+backward",
                         "variant": "compiled", "image_size": ds["image_size"], "batch_size": ds["batch_size"],
                         "min_time": 6.0 if quick else 15.0,
                         "variants": ["fp32_channels_last_compiled", "bf16_channels_last_compiled"]})

    # --- inference: merged LoRA vs plain backbone ----------------------------------------------------------------
    rows.append({"kind": "latency", "tool": "latency", "dataset": "random", "method": "merged-lora-vs-plain",
                 "modality": "image", "image_size": 224, "batch_sizes": [1, 32], "min_time": 5.0 if quick else 15.0})
    rows.append({"kind": "latency", "tool": "latency", "dataset": "sst2-dev", "method": "merged-lora-vs-plain",
                 "modality": "text", "batch_sizes": [1, 32], "min_time": 5.0 if quick else 15.0})
    for row in rows:
        row["mode"] = mode
        row["id"] = "/".join(x for x in (row["dataset"], row["method"], row.get("variant"), row["tool"]) if x)
    return rows


def fixed_length_rows(quick: bool, smoke: bool = False) -> list[dict[str, Any]]:
    """MiniLM at 128 tokens per text (SST-2 sentences of one label concatenated: see ``common.sst2_packed_dir``):
    ``full`` and ``lora`` eager and compiled, ``full`` on PyTorch's stock CPU kernels (``model.cpu_fast_path: false``)
    and without attention dropout, beside
    Trainer(+PEFT), and the bare model with the bf16 matmul peak measured in the same run."""
    size = 48 if smoke else (600 if quick else 2000)
    base = {"kind": "text", "dataset": f"sst2-packed128-{size // 1000}k" if size >= 1000 else f"sst2-packed128-{size}",
            "packed_tokens": 128, "max_train": size, "epochs": 1, "batch_size": 16 if smoke else 32,
            "mixed_precision": "bf16", "bucket_by_length": False}
    rows = _pair(base, method="full", lr=TEXT_LR["full"])
    rows += _pair(base, method="lora", lr=TEXT_LR["lora"], lora_targets=QV)
    if not smoke:
        rows.append({**base, "tool": "hftransfer", "method": "full", "variant": "compile", "lr": TEXT_LR["full"],
                     "compile": True})
        rows.append({**base, "tool": "hftransfer", "method": "full", "variant": "stock-kernels",
                     "lr": TEXT_LR["full"], "cpu_fast_path": False})
        rows.append({**base, "tool": "hftransfer", "method": "full", "variant": "no-attn-dropout",
                     "lr": TEXT_LR["full"], "config_overrides": {"attention_probs_dropout_prob": 0.0}})
        rows.append({**base, "tool": "hftransfer", "method": "lora", "variant": "compile", "lr": TEXT_LR["lora"],
                     "lora_targets": QV, "compile": True})
    rows.append({"kind": "bare", "modality": "text", "tool": "bare", "dataset": base["dataset"],
                 "method": "forward+backward", "packed_tokens": 128, "batch_size": base["batch_size"],
                 "min_time": 0.2 if smoke else (6.0 if quick else 15.0), "peak_size": 512 if smoke else 4096,
                 **({"variants": ["eager"], "min_iters": 1} if smoke else {})})
    return rows


def _smoke_rows() -> list[dict[str, Any]]:
    text = {"kind": "text", "dataset": "sst2-tiny", "max_train": 48, "max_eval": 32, "epochs": 1, "batch_size": 16,
            "mixed_precision": "bf16", "max_length": 32}
    cifar = {"kind": "vision", "dataset": "cifar10-tiny", "image_size": 32, "epochs": 1, "batch_size": 16,
             "max_train": 40, "max_eval": 20, "peer_workers": 0}
    rows = _pair(text, method="lora", lr=1e-3, lora_targets=QV)
    rows += _pair({**text, "epochs": 2}, method="linear_probe", lr=1e-3)
    rows.append({"kind": "bare", "tool": "bare", "dataset": "cifar10-tiny", "method": "forward+backward",
                 "image_size": 32, "batch_size": 8, "min_time": 0.2, "min_iters": 1, "variants": ["fp32"]})
    rows += _pair(cifar, method="full", lr=0.01)
    rows += _pair(cifar, method="lora", lr=0.01)
    rows.append({"kind": "latency", "tool": "latency", "dataset": "random", "method": "merged-lora-vs-plain",
                 "modality": "image", "image_size": 32, "batch_sizes": [2], "min_time": 0.2, "min_rounds": 2})
    rows += fixed_length_rows(quick=True, smoke=True)
    for row in rows:
        row["mode"] = "smoke"
        row["id"] = "/".join(x for x in (row["dataset"], row["method"], row.get("variant"), row["tool"]) if x)
    return rows


SEED_BASE = 42  # seed 0 of every row: the torch / Trainer seed the one-seed rows always used
SEEDED_KINDS = ("text", "vision")  # rows that train (bare-model and latency rows measure no accuracy)


def with_seeds(rows: list[dict[str, Any]], seeds: int, first_seed: int = 0) -> list[dict[str, Any]]:
    """Seeds ``first_seed``..``seeds - 1`` of ``rows``, seed-major (every row's seed 1, then every row's seed 2).

    Seed 0 is the row as built (its id unchanged); seed ``i`` >= 1 of a training row is a copy with ``seed`` 42 + i,
    ``seed_index`` i, ``seed_of`` the plain row's id and id ``<id>/seed<i>``. Rows that do not train have seed 0 only.
    """
    if seeds < 1 or not 0 <= first_seed < seeds:
        raise SystemExit(f"--seeds {seeds} --first-seed {first_seed}: need seeds >= 1 and 0 <= first-seed < seeds "
                         "(e.g. --seeds 3 --first-seed 1 runs seeds 1 and 2)")
    out: list[dict[str, Any]] = []
    for index in range(first_seed, seeds):
        if index == 0:
            out += rows
            continue
        out += [{**row, "seed": SEED_BASE + index, "seed_index": index, "seed_of": row["id"],
                 "id": f"{row['id']}/seed{index}"} for row in rows if row["kind"] in SEEDED_KINDS]
    return out


def _only(rows: list[dict[str, Any]], only: str | None, pattern: str | None) -> list[dict[str, Any]]:
    if only == "text":
        rows = [r for r in rows if r["kind"] == "text" or r.get("modality") == "text"]
    elif only == "vision":
        rows = [r for r in rows if r["kind"] == "vision" or (r["kind"] in ("bare", "latency")
                                                            and r.get("modality", "image") == "image")]
    if pattern:
        rows = [r for r in rows if re.search(pattern, r["id"])]
    return rows


# -------------------------------------------------------------------------------------------- one row (worker)


def run_row(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one row in this process (the orchestrator calls this through a subprocess)."""
    offline_env()
    os.environ.setdefault("HF_DATASETS_CACHE", str(Path(spec["work_dir"]) / "hf_datasets"))
    os.environ.setdefault("HFTRANSFER_CACHE", str(Path(spec["work_dir"]) / "hftransfer_cache"))
    import torch

    torch.manual_seed(spec.get("seed", 42))
    kind, tool = spec["kind"], spec["tool"]
    if kind == "text" or spec.get("modality") == "text" and kind == "bare":
        import text_rows as mod
    else:
        import vision_rows as mod
    fn = {("text", "hftransfer"): lambda: mod.run_hftransfer, ("text", "peer"): lambda: mod.run_peer,
          ("vision", "hftransfer"): lambda: mod.run_hftransfer, ("vision", "peer"): lambda: mod.run_peer,
          ("bare", "bare"): lambda: mod.run_bare, ("latency", "latency"): lambda: mod.run_latency}[(kind, tool)]()
    start = time.time()
    with MemoryMonitor() as mon:
        out = fn(spec, mon)
    out.update(mon.report())
    out["torch_threads"] = torch.get_num_threads()
    out["started"] = _dt.datetime.fromtimestamp(start).isoformat(timespec="seconds")
    out.update(row_provenance())  # rows of one results file come from several machines and commits
    out["load_average_after"] = list(os.getloadavg())
    return out


def _worker_main(spec_json: str, out_path: str) -> int:
    spec = json.loads(spec_json)
    try:
        result = {"ok": True, **run_row(spec)}
    except Exception as err:  # noqa: BLE001 - recorded in the results, the suite goes on
        traceback.print_exc()
        result = {"ok": False, "error": f"{type(err).__name__}: {err}"}
    write_json(Path(out_path), result)
    return 0 if result["ok"] else 1


# ------------------------------------------------------------------------------------------------ orchestrator


def _run_worker(row: dict[str, Any], index: int, work_dir: Path, log_path: Path, timeout: float) -> dict:
    """One subprocess for one row; also measures how much CPU *other* processes took meanwhile."""
    spec = {**row, "work_dir": str(work_dir)}
    out_path = work_dir / f"row-{index}.json"
    out_path.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec), "--worker-out", str(out_path)]
    start, busy0, own0 = time.perf_counter(), proc_stat_busy_seconds(), children_cpu_seconds()
    with open(log_path, "a", encoding="utf-8") as log:
        try:
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=timeout, cwd=work_dir).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    elapsed = time.perf_counter() - start
    others = max(0.0, proc_stat_busy_seconds() - busy0 - (children_cpu_seconds() - own0))
    for scratch in list(work_dir.glob("hft-bench-*")) + list(work_dir.glob("peer-bench-*")):
        shutil.rmtree(scratch, ignore_errors=True)  # trained models and checkpoints of the row
    if out_path.is_file():
        res = json.loads(out_path.read_text())
    else:
        res = {"ok": False, "error": f"worker exited with {rc} and wrote no result (see {log_path.name})"}
    res["process_wall_s"] = round(elapsed, 1)
    # Share of the machine's CPUs that other processes used while the row ran (0 = it had the machine alone).
    res["interference"] = round(others / max(elapsed * (os.cpu_count() or 1), 1e-9), 3)
    return res


def run_suite(rows: list[dict[str, Any]], work_dir: Path, log_dir: Path, timeout: float,
              max_wait: float = 0.0, retries: int = 0, max_interference: float = 0.1,
              on_row: Callable[[str, dict], None] | None = None) -> dict[str, dict]:
    """Run the rows in order. A row that other processes disturbed (they took more than ``max_interference`` of
    the CPUs while it ran) is run again, up to ``retries`` times; the least disturbed attempt is kept."""
    results = {}
    log_dir.mkdir(parents=True, exist_ok=True)
    for i, row in enumerate(rows, 1):
        log_path = log_dir / (re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{row['mode']}-{row['id']}") + ".log")
        log_path.unlink(missing_ok=True)
        attempts = []
        for attempt in range(retries + 1):
            quiet = wait_for_quiet(max_wait) if max_wait > 0 else {"cpu_busy_before": round(cpu_busy_fraction(), 2)}
            waited = f", waited {quiet['waited_s']:.0f}s" if quiet.get("waited_s") else ""
            print(f"[{i}/{len(rows)}] {row['mode']} {row['id']}{f' (retry {attempt})' if attempt else ''} "
                  f"(CPU busy before: {quiet['cpu_busy_before']:.0%}{waited}) ...", flush=True)
            res = _run_worker(row, i, work_dir, log_path, timeout)
            res.update(quiet)
            attempts.append(res)
            print(f"    {'ok' if res.get('ok') else 'FAILED'} in {res['process_wall_s']:.0f}s, others used "
                  f"{res['interference']:.0%} of the CPUs: {_one_line(res)}", flush=True)
            if not res.get("ok") or res["interference"] <= max_interference:
                break
        best = min((a for a in attempts if a.get("ok")), key=lambda a: a["interference"], default=attempts[-1])
        best["attempts"] = [{k: a.get(k) for k in ("interference", "samples_per_s", "accuracy", "process_wall_s")}
                            for a in attempts]
        results[row["id"]] = {"spec": row, "result": best}
        if on_row is not None:
            on_row(row["id"], results[row["id"]])
    return results


def _one_line(res: dict[str, Any]) -> str:
    if not res.get("ok"):
        return res.get("error", "")
    if "samples_per_s" in res:
        return (f"{res['samples_per_s']:.1f} samples/s, acc {res['accuracy']:.4f}, train mem "
                f"{res.get('train_mem_mb')} MB, peak {res.get('peak_rss_mb')} MB")
    if "variants" in res and "bf16_matmul_peak_flop_s" in res:  # text: training only, and the matmul peak
        return ", ".join(f"{k}: train {v['train_fwd_bwd_seq_per_s']:.1f} seq/s" for k, v in res["variants"].items()) \
            + f"; bf16 matmul peak {res['bf16_matmul_peak_flop_s'] / 1e12:.2f} TFLOP/s"
    if "variants" in res:
        return ", ".join(f"{k}: train {v['train_fwd_bwd_img_per_s']:.1f} / infer {v['inference_img_per_s']:.1f} img/s"
                         for k, v in res["variants"].items())
    return ", ".join(f"{k}: merged/plain {v['merged_over_plain']:.3f}" for k, v in res.items()
                     if isinstance(v, dict) and "merged_over_plain" in v)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("quick", "full", "smoke"), default="quick",
                        help="smoke: a seconds-long wiring check on minuscule data (used by tests/test_bench.py)")
    parser.add_argument("--only", choices=("text", "vision"), default=None)
    parser.add_argument("--rows", default=None, help="regex on row ids (e.g. 'hymenoptera/full') to run only those")
    parser.add_argument("--seeds", type=int, default=1,
                        help="seeds per training row: seed 0 is the row itself, seed i >= 1 the row <id>/seed<i>")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="start at this seed (e.g. --seeds 3 --first-seed 1 adds seeds 1 and 2 to a finished run)")
    parser.add_argument("--out", default=str(BENCH_DIR / "results"))
    parser.add_argument("--work-dir", default=None, help="scratch space for subsets and model outputs (default: tmp)")
    parser.add_argument("--timeout", type=float, default=4 * 3600, help="seconds per row")
    parser.add_argument("--max-wait", type=float, default=60.0,
                        help="before each row, wait up to this many seconds for other processes to leave the CPUs "
                             "(< 25%% busy); the CPU use seen is recorded either way")
    parser.add_argument("--retries", type=int, default=2,
                        help="re-run a row up to this many times when other processes took more than "
                             "--max-interference of the CPUs while it ran (the least disturbed attempt is kept)")
    parser.add_argument("--max-interference", type=float, default=0.1)
    parser.add_argument("--list", action="store_true", help="print the rows of --mode and exit")
    parser.add_argument("--render-only", action="store_true", help="re-render RESULTS.md/plot from results.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _worker_main(args.worker, args.worker_out)

    import report

    out = Path(args.out)
    rows = with_seeds(_only(build_rows(args.mode), args.only, args.rows), args.seeds, args.first_seed)
    if args.list:
        for r in rows:
            print(r["id"], json.dumps({k: v for k, v in r.items() if k not in ("id", "mode")}))
        return 0
    results_path = out / "results.json"
    store = json.loads(results_path.read_text()) if results_path.is_file() else {"runs": {}}
    if not args.render_only:
        command = "python bench/run.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None
                                                                             else sys.argv[1:]))
        work_dir = Path(args.work_dir) if args.work_dir else Path(tempfile.gettempdir()) / "hftransfer-bench"
        work_dir.mkdir(parents=True, exist_ok=True)
        offline_env()
        machine = machine_info()
        started = _dt.datetime.now().astimezone()
        print(f"hftransfer bench, mode {args.mode}: {len(rows)} rows on {machine['nproc']} x {machine['cpu_model']}, "
              f"torch {machine['versions']['torch']}", flush=True)
        log_dir = work_dir / "logs"
        print(f"row logs: {log_dir}", flush=True)
        run = store["runs"].setdefault(args.mode, {"rows": {}, "invocations": []})
        run["machine"] = machine
        invocation = {"command": command, "started": started.isoformat(timespec="seconds"), "finished": None,
                      "cpu": machine["cpu"], "rows": [r["id"] for r in rows]}
        run["invocations"].append(invocation)

        def save_row(row_id: str, entry: dict) -> None:  # every finished row is kept, even if the run is stopped
            run["rows"][row_id] = entry
            write_json(results_path, store)

        run_suite(rows, work_dir, log_dir, args.timeout, args.max_wait, args.retries, args.max_interference,
                  on_row=save_row)
        invocation["finished"] = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
        write_json(results_path, store)
    report.render(store, out)
    print(f"wrote {results_path}, {out / 'RESULTS.md'}, {out / 'accuracy_vs_time.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
