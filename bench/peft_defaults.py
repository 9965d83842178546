"""Parameter-efficient defaults on SST-2 (issue 22): search on train, confirm the registered defaults on dev.

MiniLM (``packaged:all-MiniLM-L6-v2``), max_length 66, batch 32, 2 epochs (what ``bench/run.py``'s SST-2 rows run).

- ``search``: each candidate (method options and learning rate over the method's registered defaults) trains on a
  fixed stratified 10,000-sentence subset of SST-2 ``train`` and is selected and compared on 2,000 *other* train
  sentences ("tune" split). SST-2 ``dev`` is never read, so the defaults chosen here are not fitted to it.
- ``confirm``: the method's registered defaults as a user gets them (``recipe: <method>``, nothing else) on the whole
  train set, reported on ``dev`` (872 sentences; 1 point = ~9 sentences), beside ``full`` with its defaults; the issue
  22 goals (``adapter`` within 1 point of ``full``, ``prefix_tuning`` within 3) are marked.

Rows merge into ``results/peft_defaults.json`` after each run (finished rows are skipped unless ``--rerun``);
``results/peft_defaults.md`` is the page.

    nice -n 19 .venv/bin/python bench/peft_defaults.py search --methods adapter
    nice -n 19 .venv/bin/python bench/peft_defaults.py confirm --methods full,adapter --seeds 1
    .venv/bin/python bench/peft_defaults.py render
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SST2, machine_info, offline_env, stratified_indices, write_bench_page, write_json  # noqa: E402


MODEL = "packaged:all-MiniLM-L6-v2"
BASE = {"model": {"name": MODEL, "max_length": 66}, "epochs": 2, "batch_size": 32}
SEARCH_TRAIN, SEARCH_TUNE = 10_000, 2_000
# Candidates per method: overrides of the registered defaults ({} = the defaults as registered when it ran).
SEARCH = {
    "adapter": [{}, {"method": {"reduction_factor": 8}}, {"method": {"reduction_factor": 4}},
                {"optim": {"lr": 3e-3}}, {"method": {"reduction_factor": 4}, "optim": {"lr": 3e-3}},
                {"method": {"reduction_factor": 4, "train_norms": True}, "optim": {"lr": 3e-3}}],
    "prefix_tuning": [{}, {"optim": {"lr": 5e-3}}, {"optim": {"lr": 3e-2}},
                      {"method": {"num_virtual_tokens": 40}}],
}
GOALS = {"adapter": 1.0, "prefix_tuning": 3.0}  # largest gap to `full` on dev, points


def search_split(work: Path) -> tuple[Path, Path]:
    """10,000 train sentences to train on and 2,000 other train sentences to compare on (stratified, fixed)."""
    import pandas as pd

    out = work / "sst2_search"
    if not (out / "tune.csv").is_file():
        out.mkdir(parents=True, exist_ok=True)
        train = pd.read_csv(SST2 / "train.csv")
        picked = stratified_indices(train["label"].to_numpy(), SEARCH_TRAIN + SEARCH_TUNE)
        tune_pos = stratified_indices(train["label"].to_numpy()[picked], SEARCH_TUNE, seed=1)
        train.iloc[picked].iloc[sorted(set(range(len(picked))) - set(tune_pos))].to_csv(out / "train.csv",
                                                                                         index=False)
        train.iloc[picked[tune_pos]].to_csv(out / "tune.tmp", index=False)
        (out / "tune.tmp").replace(out / "tune.csv")
    return out / "train.csv", out / "tune.csv"


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def row_key(stage: str, method: str, overrides: dict[str, Any], seed: int) -> str:
    return f"{stage}/{method}/{json.dumps(overrides, sort_keys=True)}/seed{seed}"


def run_row(stage: str, method: str, overrides: dict[str, Any], seed: int, work: Path) -> dict[str, Any]:
    import yaml

    import hftransfer

    if stage == "search":
        train, validation = search_split(work)
    else:
        train, validation = SST2 / "train.csv", SST2 / "dev.csv"
    out_dir = work / f"{stage}_{method}_seed{seed}"
    config = _merge({**BASE, "recipe": method, "seed": seed, "output_dir": str(out_dir),
                     "overwrite_output_dir": True, "progress_bar": False,
                     "data": {"train": str(train), "validation": str(validation),
                              "label_names": ["negative", "positive"]}}, overrides)
    start = time.perf_counter()
    result = hftransfer.train(config)
    metrics = json.loads((result.output_dir / "metrics.json").read_text())
    resolved = yaml.safe_load((result.output_dir / "config.yaml").read_text())  # the config as resolved
    last = metrics["history"][-1]
    row = {"stage": stage, "method": method, "overrides": overrides, "seed": seed,
           "split": "tune (2,000 train sentences)" if stage == "search" else "dev",
           "accuracy": metrics["final_eval"]["accuracy"], "best_epoch": metrics["best_epoch"],
           "per_epoch": [h["eval_accuracy"] for h in metrics["history"]],
           "lr": (resolved.get("optim") or {}).get("lr"), "method_options": resolved.get("method"),
           "train_samples_per_s": round(last.get("train_samples_per_s") or 0.0, 1),
           "train_time_s": round(last["train_time_s"], 1), "wall_s": round(time.perf_counter() - start, 1)}
    shutil.rmtree(out_dir, ignore_errors=True)
    return row


def _mean_std(values: list[float]) -> str:
    std = statistics.pstdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {std:.2f} ({len(values)})"


def render(results: dict[str, Any]) -> str:
    rows = list(results.get("rows", {}).values())
    lines = ["# Parameter-efficient defaults on SST-2", "",
             f"MiniLM (`{MODEL}`), max_length {BASE['model']['max_length']}, batch {BASE['batch_size']}, "
             f"{BASE['epochs']} epochs. **Search**: trained on {SEARCH_TRAIN:,} SST-2 train sentences, compared on "
             f"{SEARCH_TUNE:,} other train sentences (`tune`); SST-2 dev not read. **Confirm**: the registered "
             "defaults (`recipe: <method>` and nothing else) on all 67,349 train sentences, reported on SST-2 dev "
             "(872 sentences, 1 point = ~9 sentences).", "",
             "## Search (tune split accuracy, %)", "",
             "| method | overrides of the defaults then registered | lr | tune acc | per epoch | samples/s |",
             "|:--|:--|--:|--:|--:|--:|"]
    for r in sorted((r for r in rows if r["stage"] == "search"), key=lambda r: (r["method"], -r["accuracy"])):
        lines.append(f"| {r['method']} | `{json.dumps(r['overrides']) if r['overrides'] else 'defaults'}` | "
                     f"{r['lr']} | {100 * r['accuracy']:.2f} | "
                     f"{', '.join(f'{100 * a:.1f}' for a in r['per_epoch'])} | {r['train_samples_per_s']} |")
    confirm: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["stage"] == "confirm":
            confirm.setdefault(r["method"], []).append(r)
    lines += ["", "## Confirm: registered defaults, SST-2 dev accuracy (%)", "",
              "| method | lr | method options | dev acc (mean ± std, n) | gap to full | goal | samples/s |",
              "|:--|--:|:--|--:|--:|:--|--:|"]
    full = [100 * r["accuracy"] for r in confirm.get("full", [])]
    for method, done in confirm.items():
        accs = [100 * r["accuracy"] for r in done]
        gap = statistics.mean(full) - statistics.mean(accs) if full and method != "full" else None
        goal = GOALS.get(method)
        mark = "–" if goal is None or gap is None else (
            f"<= {goal} pt: **{'met' if gap <= goal else 'missed'}**" + (" (provisional: < 3 seeds)"
                                                                         if len(done) < 3 else ""))
        lines.append(f"| {method} | {done[0]['lr']} | `{json.dumps(done[0]['method_options'])}` | "
                     f"{_mean_std(accs)} | {'–' if gap is None else f'{gap:+.2f}'} | {mark} | "
                     f"{statistics.mean(r['train_samples_per_s'] for r in done):.1f} |")
    machine = results.get("machine", {})
    lines += ["", f"Machine: {machine.get('cpu_model', '?')}, {machine.get('nproc', '?')} CPUs, hftransfer git "
              f"{machine.get('git_commit', '?')}.", "",
              "Commands (in order): " + ", ".join(f"`{c}`" for c in results.get("commands", [])), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=("search", "confirm", "render"))
    parser.add_argument("--methods", default="adapter,prefix_tuning",
                        help="comma-separated; search: of " + ", ".join(SEARCH) + "; confirm: any recipe")
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1")
    parser.add_argument("--rerun", action="store_true", help="run rows already in the results again")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "hftransfer-bench-peft")
    args = parser.parse_args(argv)
    json_path, page = args.out / "peft_defaults.json", args.out / "peft_defaults.md"
    results = json.loads(json_path.read_text()) if json_path.is_file() else {"rows": {}, "commands": []}
    if args.stage != "render":
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        unknown = [m for m in methods if args.stage == "search" and m not in SEARCH]
        if unknown:
            parser.error(f"--methods: no search candidates for {unknown}; search knows {sorted(SEARCH)}")
        if not (SST2 / "train.csv").is_file():
            parser.error(f"SST-2 not found at {SST2} (the bench needs ../shared/data/sst2)")
        offline_env()
        results["machine"] = machine_info()
        results["commands"].append("nice -n 19 .venv/bin/python bench/peft_defaults.py " + " ".join(
            argv if argv is not None else sys.argv[1:]))
        args.work_dir.mkdir(parents=True, exist_ok=True)
        for method in methods:
            for overrides in SEARCH[method] if args.stage == "search" else [{}]:
                for seed in range(args.seeds):
                    key = row_key(args.stage, method, overrides, seed)
                    if key in results["rows"] and not args.rerun:
                        continue
                    results["rows"][key] = run_row(args.stage, method, overrides, seed, args.work_dir)
                    print(key, f"{100 * results['rows'][key]['accuracy']:.2f}", flush=True)
                    write_json(json_path, results)
    write_bench_page(page, render(results))
    print(page)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
