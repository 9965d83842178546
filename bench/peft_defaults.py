"""Parameter-efficient defaults on SST-2 (issue 22): a search on SST-2 train that never reads dev.

MiniLM (``packaged:all-MiniLM-L6-v2``), max_length 66, batch 32, 2 epochs (what ``bench/run.py``'s SST-2 rows run).
Each candidate (method options and learning rate over the method's registered defaults) trains on a fixed stratified
10,000-sentence subset of SST-2 ``train`` and is selected and compared on 2,000 *other* train sentences (the "tune"
split). SST-2 ``dev`` is never read, so the defaults chosen here are not fitted to it. The winner goes into the
method's registration; the confirmation on the whole train set, reported on ``dev`` beside ``full``, is the method's
``sst2/<method>`` row of ``bench/run.py`` (``RESULTS.md``, with the issue 22 goals).

Rows merge into ``results/peft_defaults.json`` after each run (finished rows are skipped unless ``--rerun``);
``results/peft_defaults.md`` is the page.

    nice -n 19 .venv/bin/python bench/peft_defaults.py --methods adapter,prefix_tuning
    nice -n 19 .venv/bin/python bench/peft_defaults.py --methods adapter,full,ia3,prompt_tuning
    .venv/bin/python bench/peft_defaults.py --render-only
"""

from __future__ import annotations

import argparse
import json
import shutil
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
                {"method": {"reduction_factor": 4, "train_norms": True}, "optim": {"lr": 3e-3}},
                {"method": {"reduction_factor": 2}, "optim": {"lr": 3e-3}},
                {"method": {"reduction_factor": 4}, "optim": {"lr": 5e-3}},
                {"method": {"reduction_factor": 4, "placement": "parallel"}, "optim": {"lr": 3e-3}},
                {"method": {"reduction_factor": 4, "placement": "parallel", "scaling": 4.0}, "optim": {"lr": 3e-3}},
                {"method": {"reduction_factor": 4}, "optim": {"lr": 3e-3}, "epochs": 3}],
    "prefix_tuning": [{}, {"optim": {"lr": 5e-3}}, {"optim": {"lr": 3e-2}},
                      {"method": {"num_virtual_tokens": 40}},
                      # P-Tuning v2's reparameterisation: the prompts come out of a two-layer tanh MLP
                      {"method": {"projection": True}}, {"method": {"projection": True}, "optim": {"lr": 3e-3}}],
    "ia3": [{}, {"optim": {"lr": 1e-2}}, {"optim": {"lr": 3e-2}}],
    "prompt_tuning": [{}, {"optim": {"lr": 1e-1}}, {"optim": {"lr": 3e-1}}],
    # the reference the goals are judged against: bench/run.py's sst2/full row (lr 1e-4), same split and epochs
    "full": [{"optim": {"lr": 1e-4}}],
}


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


def row_key(method: str, overrides: dict[str, Any], seed: int) -> str:
    return f"search/{method}/{json.dumps(overrides, sort_keys=True)}/seed{seed}"


def run_row(method: str, overrides: dict[str, Any], seed: int, work: Path) -> dict[str, Any]:
    import yaml

    import hftransfer

    train, validation = search_split(work)
    out_dir = work / f"search_{method}_seed{seed}"
    config = _merge({**BASE, "recipe": method, "seed": seed, "output_dir": str(out_dir),
                     "overwrite_output_dir": True, "progress_bar": False,
                     "data": {"train": str(train), "validation": str(validation),
                              "label_names": ["negative", "positive"]}}, overrides)
    start = time.perf_counter()
    result = hftransfer.train(config)
    metrics = json.loads((result.output_dir / "metrics.json").read_text())
    resolved = yaml.safe_load((result.output_dir / "config.yaml").read_text())  # the config as resolved
    last = metrics["history"][-1]
    row = {"method": method, "overrides": overrides, "seed": seed,
           "split": "tune (2,000 train sentences)",
           "accuracy": metrics["final_eval"]["accuracy"], "best_epoch": metrics["best_epoch"],
           "per_epoch": [h["eval_accuracy"] for h in metrics["history"]],
           "lr": (resolved.get("optim") or {}).get("lr"), "method_options": resolved.get("method"),
           "train_samples_per_s": round(last.get("train_samples_per_s") or 0.0, 1),
           "train_time_s": round(last["train_time_s"], 1), "wall_s": round(time.perf_counter() - start, 1)}
    shutil.rmtree(out_dir, ignore_errors=True)
    return row


def render(results: dict[str, Any]) -> str:
    rows = list(results.get("rows", {}).values())
    lines = ["# Parameter-efficient defaults on SST-2", "",
             f"MiniLM (`{MODEL}`), max_length {BASE['model']['max_length']}, batch {BASE['batch_size']}, "
             f"{BASE['epochs']} epochs. Trained on {SEARCH_TRAIN:,} SST-2 train sentences, compared on "
             f"{SEARCH_TUNE:,} other train sentences (`tune` split, accuracy in %; 0.05 points = one sentence); "
             "SST-2 dev not read. The chosen defaults are confirmed on dev by `bench/run.py`'s `sst2/<method>` rows "
             "(`RESULTS.md`).", "",
             "| method | overrides of the defaults then registered | lr | seed | tune acc | per epoch | samples/s |",
             "|:--|:--|--:|--:|--:|--:|--:|"]
    for r in sorted(rows, key=lambda r: (r["method"], -r["accuracy"])):
        lines.append(f"| {r['method']} | `{json.dumps(r['overrides']) if r['overrides'] else 'defaults'}` | "
                     f"{r['lr']} | {r['seed']} | {100 * r['accuracy']:.2f} | "
                     f"{', '.join(f'{100 * a:.1f}' for a in r['per_epoch'])} | {r['train_samples_per_s']} |")
    machine = results.get("machine", {})
    lines += ["", f"Machine: {machine.get('cpu_model', '?')}, {machine.get('nproc', '?')} CPUs, hftransfer git "
              f"{machine.get('git_commit', '?')}.", "",
              "Commands (in order): " + ", ".join(f"`{c}`" for c in results.get("commands", [])), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(SEARCH), help="comma-separated, of: " + ", ".join(SEARCH))
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1")
    parser.add_argument("--rerun", action="store_true", help="run rows already in the results again")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "hftransfer-bench-peft")
    parser.add_argument("--render-only", action="store_true")
    args = parser.parse_args(argv)
    json_path, page = args.out / "peft_defaults.json", args.out / "peft_defaults.md"
    results = json.loads(json_path.read_text()) if json_path.is_file() else {"rows": {}, "commands": []}
    if not args.render_only:
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        unknown = [m for m in methods if m not in SEARCH]
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
            for overrides in SEARCH[method]:
                for seed in range(args.seeds):
                    key = row_key(method, overrides, seed)
                    if key in results["rows"] and not args.rerun:
                        continue
                    results["rows"][key] = run_row(method, overrides, seed, args.work_dir)
                    print(key, f"{100 * results['rows'][key]['accuracy']:.2f}", flush=True)
                    write_json(json_path, results)
    write_bench_page(page, render(results))
    print(page)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
