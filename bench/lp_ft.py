"""LP-FT vs full fine-tuning out of distribution: PACS, train on photo, score on art_painting / cartoon / sketch.

EfficientNet-Lite0 (packaged ImageNet weights) at 128 px, as bench/domain_adaptation.py. Every arm trains on a
stratified subsample of photo and picks its checkpoint on photo's held-out validation part (``photo_val``, the
selection split); the three other domains are never seen in training or selection and each model is scored once on a
fixed stratified subsample of each (the same images for every arm and seed). Arms:

- ``full``: recipe ``full`` (its defaults: AdamW 3e-4, warm-up, cosine).
- ``lp_ft``: recipe ``lp_ft`` (its defaults: AdamW 1e-4): the engine's set-up fits its linear probe first
  (``hftransfer.training.head_warmup.warm_up_head``, stats in metrics.json ``head_warmup``). The recorded rows ran
  before that hook landed, with the same function called from a Callback at the start of training (after the
  optimizer was built, before any step: the same result).
- ``full_lr1e-4``: recipe ``full`` at lp_ft's LR, and ``lp_ft_lr3e-4``: ``lp_ft`` at full's LR: they separate the
  probe's effect from the LR's.
- ``linear_probe``: recipe ``linear_probe`` (cached features, no augmentation): LP-FT's stage 1 alone.
- ``lp_ft_wise_ft`` / ``full_wise_ft``: the recipe plus ``wise_ft: {}`` (WiSE-FT as a training option, its default
  alphas 0, 0.25, 0.5, 0.75, 1): the run's start (lp_ft: pretrained backbone + fitted probe head; full: pretrained
  backbone + initial head) and its best model interpolated, the alpha chosen on ``photo_val``.

``--lodo``: DomainBed's leave-one-domain-out protocol. Each of the four domains is held out in turn; the source is
the other three, balanced (``source_per_domain_class`` images of every class from each, seeded, the same for every arm
and seed), the checkpoint and WiSE-FT alpha are picked on a validation part of that source (training-domain
validation, DomainBed's default model selection) and the held-out domain is scored once on a fixed stratified
subsample. The table gives each held-out domain and their average (DomainBed's headline number).

The PACS tars are extracted into a temporary folder at run time. Rows merge into ``results/lp_ft.json`` after every
run; ``results/lp_ft.md`` is the table.

    nice -n 19 env OMP_NUM_THREADS=1 .venv/bin/python bench/lp_ft.py --seeds 1           # ~17 min on 2 busy cores
    nice -n 19 env OMP_NUM_THREADS=1 .venv/bin/python bench/lp_ft.py --seeds 3 --first-seed 1   # add seeds 1, 2
    nice -n 19 .venv/bin/python bench/lp_ft.py --lodo --seeds 1 --arms full,lp_ft,lp_ft_wise_ft,linear_probe
    .venv/bin/python bench/lp_ft.py --smoke [--lodo]                                    # minuscule, end to end
    .venv/bin/python bench/lp_ft.py --render-only
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any


sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA_ROOT, REPO_ROOT, machine_info, offline_env, row_provenance, write_bench_page, write_json  # noqa: E402


TARGETS = ("art_painting", "cartoon", "sketch")
DOMAINS = ("art_painting", "cartoon", "photo", "sketch")  # --lodo: each held out in turn
ARMS = ("full", "lp_ft", "lp_ft_wise_ft", "full_wise_ft", "lp_ft_bn_update", "frozen_bn_no_probe", "full_lr1e-4",
        "lp_ft_lr3e-4", "linear_probe")
WISE_FT_ARMS = {"lp_ft_wise_ft": "lp_ft", "full_wise_ft": "full"}  # the recipe + `wise_ft: {}` (its default alphas)
# Arms with method options: BatchNorm statistics updated (the old default); no probe (a 1-pass probe at LR 1e-12
# leaves the head as initialised), to separate the probe's effect from that of frozen statistics.
METHOD_OPTIONS = {
    "lp_ft_bn_update": ("lp_ft", {"norm_statistics": "update"}),
    "frozen_bn_no_probe": ("lp_ft", {"norm_statistics": "frozen", "probe_epochs": 1, "probe_lr": 1e-12}),
}
LR_ARMS = {"full_lr1e-4": ("full", 1e-4), "lp_ft_lr3e-4": ("lp_ft", 3e-4)}  # an arm at the other recipe's LR
RESULTS = Path(__file__).resolve().parent / "results"
SETTINGS = {
    "bench": {"image_size": 128, "max_train_samples": 600, "max_eval_samples": 200, "epochs": 3, "batch_size": 32,
              "probe_epochs": None, "linear_probe_epochs": 10, "target_per_class": 60},
    # As "bench", plus a held-out in-distribution test: 30 photos per class (210) taken out of photo before training,
    # so in-distribution accuracy is reported on images neither training, checkpoint nor alpha selection saw.
    "heldout": {"image_size": 128, "max_train_samples": 600, "max_eval_samples": 200, "epochs": 3, "batch_size": 32,
                "probe_epochs": None, "linear_probe_epochs": 10, "target_per_class": 60, "photo_test_per_class": 30},
    # Leave-one-domain-out: 40 images of each class from each of the three source domains (840; 15% of them are the
    # source validation split), the held-out domain scored on 60 images per class.
    "lodo": {"image_size": 128, "max_train_samples": None, "max_eval_samples": 200, "epochs": 3, "batch_size": 32,
             "probe_epochs": None, "linear_probe_epochs": 10, "target_per_class": 60, "source_per_domain_class": 40},
    "lodo_smoke": {"image_size": 32, "max_train_samples": None, "max_eval_samples": 14, "epochs": 1, "batch_size": 8,
                   "probe_epochs": 5, "linear_probe_epochs": 1, "target_per_class": 2, "source_per_domain_class": 3},
    "smoke": {"image_size": 32, "max_train_samples": 21, "max_eval_samples": 14, "epochs": 1, "batch_size": 8,
              "probe_epochs": 5, "linear_probe_epochs": 1, "target_per_class": 2},
}


def _prepare():
    spec = importlib.util.spec_from_file_location("prepare_da_data", REPO_ROOT / "recipes" / "prepare_da_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def target_subset(folder: Path, out: Path, per_class: int) -> Path:
    """``per_class`` images of each class of an image folder (seeded choice, symlinked): the same for every arm."""
    for cls in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(p for p in cls.iterdir() if p.is_file())
        random.Random(f"{folder.name}/{cls.name}").shuffle(files)
        (out / cls.name).mkdir(parents=True, exist_ok=True)
        for f in files[:per_class]:
            (out / cls.name / f.name).symlink_to(f)
    return out


def split_off(folder: Path, out: Path, per_class: int) -> tuple[Path, Path]:
    """``folder`` split into (rest, test): ``per_class`` images of each class held out (seeded, symlinked)."""
    test = target_subset(folder, out / "test", per_class)
    for cls in sorted(p for p in folder.iterdir() if p.is_dir()):
        held = {f.name for f in (test / cls.name).iterdir()}
        (out / "rest" / cls.name).mkdir(parents=True, exist_ok=True)
        for f in sorted(p for p in cls.iterdir() if p.is_file() and p.name not in held):
            (out / "rest" / cls.name / f.name).symlink_to(f)
    return out / "rest", test


def merge_domains(folders: dict[str, Path], out: Path, per_class: int) -> Path:
    """One image folder of ``per_class`` images of every class from each domain of ``folders`` (seeded, symlinked as
    ``<class>/<domain>__<file>``): a domain-balanced multi-domain source."""
    for domain, folder in sorted(folders.items()):
        picked = target_subset(folder, out.parent / f".{out.name}-{domain}", per_class)
        for cls in sorted(p for p in picked.iterdir() if p.is_dir()):
            (out / cls.name).mkdir(parents=True, exist_ok=True)
            for link in sorted(cls.iterdir()):
                (out / cls.name / f"{domain}__{link.name}").symlink_to(link.resolve())
    return out


def arm_config(arm: str, seed: int, s: dict[str, Any], photo: Path, out: Path) -> dict[str, Any]:
    recipe, lr = LR_ARMS.get(arm, (METHOD_OPTIONS.get(arm, (WISE_FT_ARMS.get(arm, arm),))[0], None))
    config = {"recipe": recipe, "seed": seed, "output_dir": str(out),
              "overwrite_output_dir": True, "progress_bar": False, "batch_size": s["batch_size"],
              "epochs": s["epochs"], "mixed_precision": "no", "augment": "default",
              "model": {"name": "packaged:efficientnet_lite0", "image_size": s["image_size"]},
              "data": {"source": str(photo), "max_train_samples": s["max_train_samples"],
                       "max_eval_samples": s["max_eval_samples"]}}
    if lr is not None:
        config["optim"] = {"lr": lr}
    if recipe == "lp_ft" and s["probe_epochs"]:
        config["method"] = {"probe_epochs": s["probe_epochs"]}
    if arm in METHOD_OPTIONS:
        config["method"] = {**config.get("method", {}), **METHOD_OPTIONS[arm][1]}
    if arm in WISE_FT_ARMS:
        config["wise_ft"] = {}
    if arm == "linear_probe":
        config.update(augment="none", epochs=s["linear_probe_epochs"])
    return config


def run_arm(arm: str, seed: int, s: dict[str, Any], photo: Path, targets: dict[str, Path],
            work: Path, name: str = "") -> dict[str, Any]:
    """``photo``: the source image folder (photo, or --lodo's merged three domains); ``targets``: folders scored."""
    import hftransfer

    start = time.perf_counter()
    result = hftransfer.train(arm_config(arm, seed, s, photo, work / f"{name}{arm}_seed{seed}"))
    train_s = time.perf_counter() - start
    metrics = json.loads((result.output_dir / "metrics.json").read_text())
    # the source's validation part (photo, or --lodo's merged source): it picks checkpoints, so it is no held-out score
    row = {"arm": arm, "seed": seed, "source_val_accuracy": metrics["final_eval"]["accuracy"],
           "best_epoch": metrics["best_epoch"], "train_s": round(train_s, 1)}
    if metrics.get("head_warmup"):
        probe = ("probe_train_accuracy", "probe_initial_train_accuracy", "probe_train_loss", "probe_seconds")
        row.update({k: metrics["head_warmup"][k] for k in probe})
    if metrics.get("wise_ft"):
        row["wise_ft_alpha"] = metrics["wise_ft"]["alpha"]
        row["wise_ft_curve"] = [(p["alpha"], p["accuracy"]) for p in metrics["wise_ft"]["curve"]]
    for domain, folder in targets.items():  # photo_test (held-out in-distribution), when the mode has it, first
        row[f"{domain}_accuracy"] = hftransfer.evaluate(result.model_dir, folder, progress_bar=False,
                                                        batch_size=64).metrics["accuracy"]
    if all(f"{d}_accuracy" in row for d in TARGETS):  # photo -> the three others
        row["ood_mean_accuracy"] = statistics.mean(row[f"{d}_accuracy"] for d in TARGETS)
    return row


def render(results: dict[str, Any], mode: str) -> str:
    rows = [r for r in results.get("rows", {}).values() if r["mode"] == mode]
    cols = ["photo_val", *(["photo_test"] if "photo_test_per_class" in SETTINGS[mode] else []), *TARGETS, "ood_mean"]
    lines = ["| arm | " + " | ".join(f"{c} (%)" for c in cols) + " | seeds | train s |",
             "|:--|" + "--:|" * (len(cols) + 2)]
    for arm in ARMS:
        mine = [r for r in rows if r["arm"] == arm]
        if not mine:
            continue
        cells = []
        for c in cols:
            values = [100 * r["source_val_accuracy" if c == "photo_val" else f"{c}_accuracy"] for r in mine]
            cells.append(f"{statistics.mean(values):.1f} ± {statistics.pstdev(values):.1f}")
        train = statistics.mean(r["train_s"] for r in mine)
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {len(mine)} | {train:.0f} |")
    wise = [r for r in rows if "wise_ft_alpha" in r]
    if wise:
        lines += ["", "WiSE-FT alpha chosen on photo_val (0: the start, 1: the fine-tuned model): "
                  + ", ".join(f"{r['arm']} seed {r['seed']}: {r['wise_ft_alpha']:g}" for r in wise)]
    probes = [r for r in rows if "probe_train_accuracy" in r]
    if probes:
        lines += ["", "lp_ft probe (stage 1, photo train split, un-augmented): train accuracy "
                  + ", ".join(f"{100 * r['probe_train_accuracy']:.1f}% (untrained head "
                              f"{100 * r['probe_initial_train_accuracy']:.1f}%, {r['probe_seconds']:.0f} s incl. "
                              f"features, {r['arm']} seed {r['seed']})" for r in probes)]
    return "\n".join(lines)


def mean_std_cell(values: list[float]) -> str:
    """mean ± std (n), or a dash for none."""
    return f"{statistics.mean(values):.1f} ± {statistics.pstdev(values):.1f} ({len(values)})" if values else "–"


def _seed_averages(rows: list[dict[str, Any]]) -> dict[int, float]:
    """Seed -> the mean target accuracy (%) over the four held-out domains, for the seeds that have all four."""
    seeds = sorted({r["seed"] for r in rows})
    complete = [s for s in seeds if {r["held_out"] for r in rows if r["seed"] == s} == set(DOMAINS)]
    return {s: statistics.mean(100 * r["target_accuracy"] for r in rows if r["seed"] == s) for s in complete}


def render_lodo(results: dict[str, Any], mode: str = "lodo") -> str:
    """Per arm: each held-out domain's accuracy and source validation (mean ± std over seeds), and the average over
    the four held-out domains, taken per seed over the seeds that have all four (mean ± std of those)."""
    rows = [r for r in results.get("rows", {}).values() if r["mode"] == mode]
    lines = ["| arm | source_val (%) | " + " | ".join(f"{d} held out (%)" for d in DOMAINS)
             + " | average (%) | seeds | train s |", "|:--|" + "--:|" * (len(DOMAINS) + 4)]
    for arm in ARMS:
        mine = [r for r in rows if r["arm"] == arm]
        if not mine:
            continue
        per_domain = [mean_std_cell([100 * r["target_accuracy"] for r in mine if r["held_out"] == d]) for d in DOMAINS]
        average = list(_seed_averages(mine).values())
        source = mean_std_cell([100 * r["source_val_accuracy"] for r in mine])
        train = statistics.mean(r["train_s"] for r in mine)
        lines.append(f"| {arm} | {source} | " + " | ".join(per_domain)
                     + f" | {mean_std_cell(average)} | {len(average)} | {train:.0f} |")
    averages = {arm: _seed_averages([r for r in rows if r["arm"] == arm]) for arm in ("full", "lp_ft_wise_ft")}
    paired = sorted(set(averages["full"]) & set(averages["lp_ft_wise_ft"]))
    if paired:
        gain = statistics.mean(averages["lp_ft_wise_ft"][s] - averages["full"][s] for s in paired)
        lines += ["", f"Goal (issue 22): `lp_ft_wise_ft` >= `full` + 3 points on the held-out average: {gain:+.1f} "
                  f"over {len(paired)} seed(s) -> **{'met' if gain >= 3 else 'missed'}**"]
    wise = [r for r in rows if "wise_ft_alpha" in r]
    if wise:
        lines += ["", "WiSE-FT alpha chosen on the source validation split: " + ", ".join(
            f"{r['held_out']} held out seed {r['seed']}: {r['wise_ft_alpha']:g}" for r in wise)]
    return "\n".join(lines)


def _record(results: dict[str, Any], results_file: Path, key: str, row: dict[str, Any]) -> None:
    """A finished row merged into the results file at once (a stopped run keeps it) and printed."""
    results["rows"][key] = {**row, **row_provenance()}
    write_json(results_file, results)
    print(json.dumps(row), flush=True)


def run_from_photo(args, s: dict[str, Any], mode: str, folders: dict[str, Path], work: Path,
                   results: dict[str, Any], results_file: Path) -> None:
    """Train on photo, score on the three other domains (and on held-out photos with ``--heldout``)."""
    targets = {d: target_subset(folders[d], work / "targets" / d, s["target_per_class"]) for d in TARGETS}
    photo = folders["photo"]
    if s.get("photo_test_per_class"):
        photo, photo_test = split_off(photo, work / "photo_split", s["photo_test_per_class"])
        targets = {"photo_test": photo_test, **targets}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for arm in args.arms.split(","):
            row = {**run_arm(arm, seed, s, photo, targets, work), "mode": mode, "date": date.today().isoformat()}
            _record(results, results_file, f"{mode}/{arm}/seed{seed}", row)


def run_lodo(args, s: dict[str, Any], mode: str, folders: dict[str, Path], work: Path,
             results: dict[str, Any], results_file: Path) -> None:
    """Seed-major (a stopped run keeps whole seeds), then held-out domain, then arm."""
    held_outs = args.held_out.split(",")
    sources = {d: merge_domains({o: folders[o] for o in DOMAINS if o != d}, work / "lodo" / d,
                                s["source_per_domain_class"]) for d in held_outs}
    targets = {d: target_subset(folders[d], work / "targets" / d, s["target_per_class"]) for d in held_outs}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for held_out in held_outs:
            for arm in args.arms.split(","):
                row = run_arm(arm, seed, s, sources[held_out], {held_out: targets[held_out]}, work, f"{held_out}_")
                row.update(mode=mode, held_out=held_out, target_accuracy=row[f"{held_out}_accuracy"],
                           date=date.today().isoformat())
                _record(results, results_file, f"{mode}/{held_out}/{arm}/seed{seed}", row)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--heldout", action="store_true", help="the protocol with a held-out photo test split")
    parser.add_argument("--lodo", action="store_true", help="leave-one-domain-out (DomainBed's protocol)")
    parser.add_argument("--held-out", default=",".join(DOMAINS), help="--lodo: the domains to hold out in turn")
    parser.add_argument("--render-only", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    unknown = sorted(set(args.held_out.split(",")) - set(DOMAINS))
    if unknown:  # before the tars are extracted
        parser.error(f"--held-out {args.held_out!r}: {unknown} are not PACS domains; use some of {', '.join(DOMAINS)}")
    offline_env()
    if args.lodo:
        mode = "lodo_smoke" if args.smoke else "lodo"
    else:
        mode = "smoke" if args.smoke else "heldout" if args.heldout else "bench"
    s = SETTINGS[mode]
    results_file = args.out / "lp_ft.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {"rows": {}}
    if not args.render_only:
        results["machine"] = machine_info()
        results.setdefault("commands", []).append(" ".join(["python", "bench/lp_ft.py", *(argv or sys.argv[1:])]))
        with tempfile.TemporaryDirectory(prefix="hftransfer-lp-ft-") as tmp:
            work = Path(tmp)
            folders = _prepare().prepare_pacs(work / "pacs", DATA_ROOT, DOMAINS)
            run = run_lodo if args.lodo else run_from_photo
            run(args, s, mode, folders, work, results, results_file)
    print(render_lodo(results, mode) if args.lodo else render(results, mode))
    if "smoke" not in mode:
        write_page(args.out / "lp_ft.md", results, render(results, "bench"), render(results, "heldout"),
                   render_lodo(results))
    return 0


def write_page(path: Path, results: dict[str, Any], table: str, heldout: str, lodo: str) -> None:
    """``lp_ft.md``: the tables, settings, machine and commands; the hand-written notes below the marker are kept."""
    dates = sorted({r["date"] for r in results["rows"].values() if "smoke" not in r["mode"]})
    lines = ["# LP-FT vs full fine-tuning out of distribution (PACS)", "",
             "Trained on PACS photo (stratified subsample), checkpoint picked on photo's held-out validation part "
             "(`photo_val`, the selection split); art_painting / cartoon / sketch are held-out target domains, never "
             "used for training or selection, each scored once on a fixed stratified subsample (the same images for "
             "every arm). Accuracy in %, mean ± std over seeds. Arms and protocol: `bench/lp_ft.py` docstring.", "",
             table, "", "Settings (probe_epochs null: lp_ft's default): "
             f"`{json.dumps(SETTINGS['bench'])}`; EfficientNet-Lite0 (packaged ImageNet "
             "weights), fp32, augment default (linear_probe: none).", "",
             "## With a held-out photo test (`--heldout`)", "",
             "30 photos per class (210) are taken out of photo before anything trains; the arms train and select on "
             "the rest exactly as above. `photo_test` is the held-out in-distribution accuracy (no training, "
             "checkpoint or WiSE-FT alpha selection saw it); `photo_val` picks checkpoints and alphas.", "",
             heldout if len(heldout.splitlines()) > 2 else "(not run yet)", "",
             "## Leave one domain out (`--lodo`, DomainBed's protocol)", "",
             "Each domain is held out in turn; the source is the other three, balanced (40 images of every class "
             "from each: 840, of which 15% are the source validation split that picks checkpoints and alphas); the "
             "held-out domain is scored once on 60 images per class. `average`: the mean over the four held-out "
             "domains per seed (seeds with all four), mean ± std over seeds; (n): the runs in a cell (source_val: "
             "one per held-out domain and seed).", "",
             lodo if len(lodo.splitlines()) > 2 else "(not run yet)", "",
             f"Machine: {results.get('machine', {}).get('cpu_model', '?')}; dates: {', '.join(dates)}; commands: "
             + ", ".join(f"`{c}`" for c in results.get("commands", []))]
    write_bench_page(path, "\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
