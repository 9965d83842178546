"""Text domain-adaptation bench (issue 22): every objective on review domains, as a user configures it.

MiniLM (``packaged:all-MiniLM-L6-v2``), recipe ``full`` with its text defaults (lr 5e-5), 2 epochs, batch 32,
max_length 128. Source = one domain's ``train`` CSV, selected on its ``dev`` CSV (never on target labels); target =
the other domain's ``train`` texts (labels dropped by the ``target:`` loader); the number reported is the selected
model's accuracy on the target's ``test`` CSV (``target_eval:``, reported only). Data: ``<shared>/data/
reviews_dvd_electronics`` (dvd, electronics, airline; see its SOURCE.md).

Every adaptation row is the source-only config plus one line, ``objective: {name: <objective>}``: exactly what a
user writes, so the objective's own defaults (its registered text defaults) are
what is measured. Rows merge into ``results/text_da.json`` after every run (a stopped run continues where it left:
finished rows are skipped unless ``--rerun``); ``results/text_da.md`` is the table (mean ± std over seeds, delta vs
source-only, training time) with the issue 22 goals marked.

    nice -n 19 .venv/bin/python bench/text_da.py --seeds 3                      # the full bench
    nice -n 19 .venv/bin/python bench/text_da.py --seeds 1 --pairs dvd-electronics --objectives source_only,dann
    nice -n 19 .venv/bin/python bench/text_da.py --smoke --out /tmp/text-da-smoke  # minuscule, end to end
    .venv/bin/python bench/text_da.py --render-only
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA_ROOT, machine_info, offline_env, row_provenance, write_bench_page, write_json  # noqa: E402


REVIEWS = DATA_ROOT / "reviews_dvd_electronics"
PAIRS = ("dvd-electronics", "electronics-dvd", "electronics-airline")  # source-target
OBJECTIVES = ("source_only", "dann", "mmd", "coral", "self_training")
ADAPTATION = OBJECTIVES[1:]
MODEL = "packaged:all-MiniLM-L6-v2"
# What a user writes for a source-only run (the recipe fills the rest: its text lr 5e-5, AdamW, 5% LR warm-up).
BASE = {"recipe": "full", "model": {"name": MODEL, "max_length": 128}, "epochs": 2, "batch_size": 32}
# --smoke: a few rows of each file, short texts; the same code path end to end.
SMOKE = {"epochs": 2, "batch_size": 8, "model": {"name": MODEL, "max_length": 32},
         "caps": {"data": {"max_train_samples": 32, "max_eval_samples": 16},
                  "target": {"max_train_samples": 40, "max_eval_samples": 8},
                  "target_eval": {"max_train_samples": 16, "max_eval_samples": 8}}}


def run_config(pair: str, objective: str, seed: int, out_dir: Path, smoke: bool,
               options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The source-only config of ``pair``, plus ``objective: {name: <objective>}`` for an adaptation row.

    ``options`` (``--set``) are added to the objective's options: a variant, kept apart from the default rows.
    """
    source, target = pair.split("-")
    config = copy.deepcopy(BASE)
    config.update(data={"train": str(REVIEWS / f"{source}_train.csv"),
                        "validation": str(REVIEWS / f"{source}_dev.csv")},
                  target={"train": str(REVIEWS / f"{target}_train.csv")},
                  target_eval={"train": str(REVIEWS / f"{target}_test.csv")},
                  seed=seed, output_dir=str(out_dir), overwrite_output_dir=True, progress_bar=False)
    if smoke:
        config.update({k: v for k, v in SMOKE.items() if k != "caps"})
        for key, caps in SMOKE["caps"].items():
            config[key].update(caps)
    if objective != "source_only":
        config["objective"] = {"name": objective, **(options or {})}  # the one line a user adds (+ a variant)
    return config


def run_row(pair: str, objective: str, seed: int, work: Path, smoke: bool,
            options: dict[str, Any] | None = None) -> dict[str, Any]:
    import hftransfer

    out_dir = work / f"{pair}_{objective}_seed{seed}"
    start = time.perf_counter()
    result = hftransfer.train(run_config(pair, objective, seed, out_dir, smoke, options))
    metrics = json.loads((result.output_dir / "metrics.json").read_text())
    last = metrics["history"][-1]
    row = {"pair": pair, "objective": objective, "variant": variant_label(options), "seed": seed, "smoke": smoke,
           "target_test_accuracy": metrics["target_eval"]["accuracy"],
           "source_dev_accuracy": metrics["final_eval"]["accuracy"], "best_epoch": metrics["best_epoch"],
           "selected_on": metrics["selected_on"], "objective_options": metrics["objective"],
           "adaptation_check": metrics.get("adaptation_check"),  # target_eval before adaptation vs delivered
           "train_time_s": round(last["train_time_s"], 1), "wall_s": round(time.perf_counter() - start, 1),
           # per epoch: source dev (selection) and target test (reported only), to see what selection chose from,
           # and what an unlabelled-target check could see (target_entropy: on the target stream)
           "history": [{"epoch": h["epoch"], "source_dev_accuracy": h["eval_accuracy"],
                        "target_test_accuracy": h.get("target_eval_accuracy"),
                        **{k: h[k] for k in HISTORY_EXTRA if k in h}} for h in metrics["history"]],
           # the selected model on the target test texts, per class (precision, recall: the predicted class shares)
           "target_per_class": metrics["target_eval"].get("per_class")}
    shutil.rmtree(out_dir, ignore_errors=True)  # a saved MiniLM per row would fill the disk
    return row


HISTORY_EXTRA = ("target_entropy", "target_eval_loss", "target_eval_f1_macro", "eval_loss")  # kept per epoch


def variant_label(options: dict[str, Any] | None) -> str:
    """``weight=0.1,grl_max=0.5`` for ``--set`` options; empty for the objective's defaults."""
    return ",".join(f"{k}={json.dumps(v)}" for k, v in sorted((options or {}).items()))


def parse_sets(values: list[str]) -> dict[str, Any]:
    """``["weight=0.1"]`` -> ``{"weight": 0.1}``, parsed as ``hftransfer train``'s ``key=value`` overrides."""
    from hftransfer.training.config import apply_overrides

    for item in values:
        if not item.partition("=")[0]:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. --set weight=0.1")
    try:
        return apply_overrides({}, values)
    except ValueError as err:
        raise ValueError(f"--set {values}: expected KEY=VALUE, e.g. --set weight=0.1 ({err})") from err


def row_key(pair: str, objective: str, seed: int, variant: str = "") -> str:
    return f"{pair}/{objective}" + (f"[{variant}]" if variant else "") + f"/seed{seed}"


def row_label(row: dict[str, Any]) -> str:
    return row["objective"] + (f" [{row['variant']}]" if row.get("variant") else "")


def _stats(values: list[float]) -> tuple[float, float, int]:
    return statistics.mean(values), statistics.pstdev(values) if len(values) > 1 else 0.0, len(values)


def _paired(row: dict[str, Any], base: dict[str, Any]) -> list[float]:
    """The row's target accuracy minus source-only's, seed by seed, over the seeds both have (paired: same seed, same
    data order)."""
    return [row["by_seed"][s] - base["by_seed"][s] for s in sorted(set(row["by_seed"]) & set(base["by_seed"]))]


def _paired_delta(row: dict[str, Any], base: dict[str, Any]) -> float:
    """Mean of :func:`_paired` (NaN when the rows share no seed)."""
    deltas = _paired(row, base)
    return statistics.mean(deltas) if deltas else float("nan")


def _selection_counterfactuals(row: dict[str, Any]) -> dict[str, float] | None:
    """Target test accuracy (%) of the epoch each rule would pick from the row's per-epoch history: ``as_run`` (source
    dev, warm-up epochs excluded: what the engine does), ``warmup_candidate`` (source dev over every epoch, the
    engine's tie rule: the earlier epoch) and ``bound`` (the epoch best on target test: no rule that picks among the
    run's epochs can do better; it reads target labels, a diagnostic only). None without a complete history."""
    history = row.get("history") or []
    if len(history) < 2 or any(h.get("target_test_accuracy") is None for h in history):
        return None
    first_best = lambda rows: max(rows, key=lambda h: (h["source_dev_accuracy"], -h["epoch"]))  # noqa: E731
    return {"as_run": 100 * row["target_test_accuracy"],
            "warmup_candidate": 100 * first_best(history)["target_test_accuracy"],
            "bound": 100 * max(h["target_test_accuracy"] for h in history)}


def _seed_deltas(row: dict[str, Any], base: dict[str, Any]) -> str:
    """``+1.35 / +0.60 / +3.10``: :func:`_paired` as text (the spread behind Δ)."""
    return " / ".join(f"{d:+.2f}" for d in _paired(row, base))


def render_selection(rows: list[dict[str, Any]], pairs: list[str], labels: list[str]) -> list[str]:
    """The 'what could model selection change' table: each rule's mean Δ against source-only (paired by seed)."""
    base = {(r["pair"], r["seed"]): 100 * r["target_test_accuracy"] for r in rows if r["objective"] == "source_only"}
    lines = ["", "What model selection could change (from each run's per-epoch history, no new runs; Δ against "
             "source-only as it ran, mean over the seeds both have): **as run** = source dev, the warm-up epochs "
             "excluded (the engine's rule); **warm-up a candidate** = source dev over every epoch; **bound** = the "
             "epoch best on target test, an upper bound for any rule that picks one of the run's epochs (it reads "
             "target labels: a diagnostic, never a selection rule).", "",
             "| pair | objective | seeds | Δ as run | Δ warm-up a candidate | Δ bound |", "|:--|:--|--:|--:|--:|--:|"]
    for pair in pairs:
        for label in labels[1:]:
            picks = [(r["seed"], c) for r in rows if (r["pair"], row_label(r)) == (pair, label)
                     and (c := _selection_counterfactuals(r)) is not None and (pair, r["seed"]) in base]
            if not picks:
                continue
            delta = {rule: statistics.mean(c[rule] - base[pair, seed] for seed, c in picks)
                     for rule in ("as_run", "warmup_candidate", "bound")}
            lines.append(f"| {pair} | {label} | {len(picks)} | {delta['as_run']:+.2f} | "
                         f"{delta['warmup_candidate']:+.2f} | {delta['bound']:+.2f} |")
    return lines


def render(results: dict[str, Any]) -> str:
    rows = list(results.get("rows", {}).values())
    pairs = [p for p in PAIRS if any(r["pair"] == p for r in rows)] + sorted(
        {r["pair"] for r in rows} - set(PAIRS))
    labels = [label for objective in OBJECTIVES for label in [objective] + sorted(
        {row_label(r) for r in rows if r["objective"] == objective and r.get("variant")})]
    cell: dict[tuple[str, str], dict[str, tuple[float, float, int]]] = {}
    for pair in pairs:
        for objective in labels:
            done = [r for r in rows if (r["pair"], row_label(r)) == (pair, objective)]
            if done:
                cell[pair, objective] = {
                    "target": _stats([100 * r["target_test_accuracy"] for r in done]),
                    "source": _stats([100 * r["source_dev_accuracy"] for r in done]),
                    "time": _stats([r["train_time_s"] for r in done]),
                    "epochs": ",".join(str(r["best_epoch"]) for r in sorted(done, key=lambda r: r["seed"])),
                    "by_seed": {r["seed"]: 100 * r["target_test_accuracy"] for r in done}}
    smoke = any(r.get("smoke") for r in rows)
    settings = SMOKE if smoke else BASE
    lines = ["# Text domain adaptation: review domains" + (" (SMOKE: minuscule subsets, numbers meaningless)"
                                                          if smoke else ""), "",
             f"MiniLM (`{MODEL}`), recipe `full` (its text defaults), {settings['epochs']} epochs, batch "
             f"{settings['batch_size']}, max_length {settings['model']['max_length']}"
             + (", a few rows of each file" if smoke else "") + ". Source: `<domain>_train.csv`, model selected on "
             "`<domain>_dev.csv`; target: the other domain's `train` texts without labels; reported: the selected "
             "model's accuracy on the target's `test.csv` (never used for selection). Each adaptation row is the "
             "source-only config plus `objective: {name: <objective>}` (the objective's own text defaults; a row "
             "`<objective> [k=v]` is a variant with those options added, outside the goals). Mean ± "
             "std over seeds (n); Δ: the mean, over the seeds both rows have (paired: same seed, same data "
             "order), of the row's target accuracy minus source-only's on the pair.", "",
             "| pair | objective | target test acc (%) | Δ vs source-only | Δ per seed | source dev acc (%) | "
             "selected epoch (per seed) | train time (s) |",
             "|:--|:--|--:|--:|--:|--:|--:|--:|"]
    for pair in pairs:
        base = cell.get((pair, "source_only"))
        for objective in labels:
            if (pair, objective) not in cell:
                continue
            c = cell[pair, objective]
            paired = base is not None and objective != "source_only"
            delta = f"{_paired_delta(c, base):+.1f}" if paired else "–"
            seeds = _seed_deltas(c, base) if paired else "–"
            lines.append(f"| {pair} | {objective} | {c['target'][0]:.1f} ± {c['target'][1]:.1f} ({c['target'][2]}) | "
                         f"{delta} | {seeds} | {c['source'][0]:.1f} ± {c['source'][1]:.1f} | {c['epochs']} | "
                         f"{c['time'][0]:.0f} |")
    complete = [p for p in pairs if all((p, o) in cell for o in OBJECTIVES)]
    lines += ["", "Goals (issue 22), on the pairs with every objective measured:"]
    seeds = min((c["target"][2] for (p, _), c in cell.items() if p in complete), default=0)
    if complete and seeds < 3:
        lines.append(f"- **provisional**: {seeds} seed(s) per row; the goals are stated over 3 seeds")
    if complete:
        below = [f"{p}/{o} ({_paired_delta(cell[p, o], cell[p, 'source_only']):+.1f}, "
                 f"{len(_paired(cell[p, o], cell[p, 'source_only']))} seeds)"
                 for p in complete for o in ADAPTATION if _paired_delta(cell[p, o], cell[p, "source_only"]) < 0]
        lines.append(f"- no objective below source-only on any pair (mean over seeds): "
                     f"**{'met' if not below else 'missed'}**" + (f" — below: {', '.join(below)}" if below else ""))
        dann = statistics.mean(_paired_delta(cell[p, "dann"], cell[p, "source_only"]) for p in complete)
        seeds_per_pair = ", ".join(str(len(_paired(cell[p, "dann"], cell[p, "source_only"]))) for p in complete)
        lines.append(f"- DANN >= source-only + 1 point on the text average ({len(complete)} pair(s); paired seeds "
                     f"per pair: {seeds_per_pair}): {dann:+.2f} -> **{'met' if dann >= 1.0 else 'missed'}**")
    else:
        lines.append("- not measurable yet (no pair has every objective)")
    lines += render_selection(rows, pairs, labels)
    options = {o: next((r["objective_options"] for r in rows if row_label(r) == o), None) for o in labels}
    machine = results.get("machine", {})
    lines += ["", "Objective options as resolved in the runs (metrics.json): " + "; ".join(
                  f"`{json.dumps(v)}`" for v in options.values() if v), "",
              f"Machine: {machine.get('cpu_model', '?')}, {machine.get('nproc', '?')} CPUs, torch threads "
              f"{machine.get('torch_threads', '?')}, hftransfer {machine.get('versions', {}).get('hftransfer', '?')} "
              f"(git {machine.get('git_commit', '?')}).", "",
              "Commands (in order): " + ", ".join(f"`{c}`" for c in results.get("commands", [])), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    parser.add_argument("--pairs", default=",".join(PAIRS), help="comma-separated source-target, of: "
                                                                   + ", ".join(PAIRS))
    parser.add_argument("--objectives", default=",".join(OBJECTIVES), help="comma-separated, of: "
                                                                             + ", ".join(OBJECTIVES))
    parser.add_argument("--smoke", action="store_true", help="minuscule subsets, 1 seed and one pair by default: "
                                                             "checks the script end to end")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="add an option to every adaptation objective run (a variant row, outside the goals), "
                             "e.g. --set weight=0.1; repeatable")
    parser.add_argument("--rerun", action="store_true", help="run rows that are already in the results again")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "hftransfer-bench-text-da")
    parser.add_argument("--render-only", action="store_true")
    args = parser.parse_args(argv)
    offline_env()
    explicit = sys.argv[1:] if argv is None else argv
    if args.smoke and "--seeds" not in explicit:
        args.seeds = 1
    if args.smoke and "--pairs" not in explicit:
        args.pairs = PAIRS[0]
    pairs, objectives = args.pairs.split(","), args.objectives.split(",")
    for name, given, valid in (("--pairs", pairs, PAIRS), ("--objectives", objectives, OBJECTIVES)):
        bad = sorted(set(given) - set(valid))
        if bad:
            parser.error(f"{name} {bad} unknown; choose from {list(valid)}")
    try:
        options = parse_sets(args.set)
    except ValueError as err:
        parser.error(str(err))
    if options and "source_only" in objectives:
        parser.error(f"--set {args.set} applies to adaptation objectives; drop source_only from --objectives "
                     f"(got {objectives})")
    stem = "text_da_smoke" if args.smoke else "text_da"
    results_file, table_file = args.out / f"{stem}.json", args.out / f"{stem}.md"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {"rows": {}}
    if not args.render_only:
        if not REVIEWS.is_dir():
            parser.error(f"data not found at {REVIEWS} (set HFTRANSFER_BENCH_DATA)")
        results["machine"] = machine_info()
        results.setdefault("commands", []).append(
            " ".join(["nice -n 19 .venv/bin/python bench/text_da.py", *explicit]))
        args.work_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=args.work_dir, prefix="runs-") as work:
            for seed in range(args.seeds):  # seed-major: a stopped run has whole seeds of every row
                for pair in pairs:
                    for objective in objectives:
                        key = row_key(pair, objective, seed, variant_label(options))
                        if key in results["rows"] and not args.rerun:
                            continue
                        row = run_row(pair, objective, seed, Path(work), args.smoke, options)
                        results["rows"][key] = {**row, **row_provenance()}
                        write_json(results_file, results)
                        write_bench_page(table_file, render(results))
                        print(json.dumps({k: v for k, v in row.items() if k != "objective_options"}), flush=True)
    text = render(results)
    args.out.mkdir(parents=True, exist_ok=True)
    write_bench_page(table_file, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
