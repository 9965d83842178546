"""Parameter-efficient defaults (issue 22): searched on SST-2 train and hymenoptera, confirmed on CIFAR-10.

Text (``--task sst2``, the default): MiniLM (``packaged:all-MiniLM-L6-v2``), max_length 66, batch 32, 2 epochs (what
``bench/run.py``'s SST-2 rows run). Each candidate (method options and learning rate over the method's registered
defaults) trains on a fixed stratified 10,000-sentence subset of SST-2 ``train`` and is selected and compared on 2,000
*other* train sentences (the "tune" split). SST-2 ``dev`` is never read, so the defaults chosen here are not fitted to
it. The winner goes into the method's registration; the confirmation on the whole train set, reported on ``dev``
beside ``full``, is the method's ``sst2/<method>`` row of ``bench/run.py`` (``RESULTS.md``, with the issue 22 goals).

Images: EfficientNet-Lite0 (``packaged:efficientnet_lite0``) with each recipe's registered defaults (optimiser,
schedule, augmentation). ``--task hymenoptera`` is the search: 224 px, 10 epochs, compared on hymenoptera ``val`` (the
choice split: its numbers pick the defaults and are not held-out results). ``--task cifar10`` is the confirmation on
another dataset that no choice reads: the same candidates on the CIFAR-10 subset at 96 px for 3 epochs (the settings
of ``bench/run.py``'s cifar10 rows), scored on its test split at the *last* epoch (no checkpoint is picked on it).
``--task cifar10-choice`` is a second choice split for when hymenoptera's 153 images cannot separate the candidates:
1,000 of the CIFAR-10 subset's train images held back (stratified), the rest trained on, the test split unread.

Rows merge into ``results/peft_defaults.json`` after each run (finished rows are skipped unless ``--rerun``);
``results/peft_defaults.md`` is the page.

    nice -n 19 .venv/bin/python bench/peft_defaults.py --methods adapter,prefix_tuning
    nice -n 19 .venv/bin/python bench/peft_defaults.py --methods adapter,full,ia3,prompt_tuning
    nice -n 19 .venv/bin/python bench/peft_defaults.py --task hymenoptera
    nice -n 19 .venv/bin/python bench/peft_defaults.py --task cifar10
    nice -n 19 .venv/bin/python bench/peft_defaults.py --task cifar10-choice
    .venv/bin/python bench/peft_defaults.py --render-only
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    CIFAR_NPZ,
    HYMENOPTERA,
    NO_DROPOUT,
    SST2,
    machine_info,
    offline_env,
    row_provenance,
    stratified_indices,
    write_bench_page,
    write_json,
)


MODEL = "packaged:all-MiniLM-L6-v2"
VISION_MODEL = "packaged:efficientnet_lite0"
BASE = {"model": {"name": MODEL, "max_length": 66}, "epochs": 2, "batch_size": 32}
SEARCH_TRAIN, SEARCH_TUNE = 10_000, 2_000
CIFAR_CHOICE = 1_000  # of the CIFAR-10 subset's 5,000 train images, held back to choose on (stratified)
# Candidates per method: overrides of the registered defaults ({} = the defaults as registered when it ran; main()
# refuses to add {} rows once the registration moved away from the stored ones, see stale_defaults).
SEARCH = {
    "adapter": [{}, {"method": {"reduction_factor": 8}}, {"method": {"reduction_factor": 4}},
                {"optim": {"lr": 3e-3}}, {"method": {"reduction_factor": 4}, "optim": {"lr": 3e-3}},
                {"method": {"reduction_factor": 4, "train_norms": True}, "optim": {"lr": 3e-3}},
                {"method": {"reduction_factor": 2}, "optim": {"lr": 3e-3}},
                {"method": {"reduction_factor": 4}, "optim": {"lr": 5e-3}},
                {"method": {"reduction_factor": 4, "placement": "parallel"}, "optim": {"lr": 3e-3}},
                {"method": {"reduction_factor": 4, "placement": "parallel", "scaling": 4.0}, "optim": {"lr": 3e-3}},
                {"method": {"reduction_factor": 4}, "optim": {"lr": 3e-3}, "epochs": 3},
                # LP-FT's first stage before the adapters train: the head starts fitted instead of random
                {"method": {"probe_epochs": 100}},
                # the frozen backbone without dropout (only the adapters and the head see a changing function)
                {"model": {"config_overrides": NO_DROPOUT}},
                # BERT's own activation in the bottleneck, and no weight decay on the adapters (session 23)
                {"method": {"non_linearity": "gelu"}}, {"optim": {"weight_decay": 0.0}}],
    "prefix_tuning": [{}, {"optim": {"lr": 5e-3}}, {"optim": {"lr": 3e-2}},
                      {"method": {"num_virtual_tokens": 40}},
                      # P-Tuning v2's reparameterisation: the prompts come out of a two-layer tanh MLP
                      {"method": {"projection": True}}, {"method": {"projection": True}, "optim": {"lr": 3e-3}},
                      {"method": {"probe_epochs": 100}}, {"model": {"config_overrides": NO_DROPOUT}},
                      {"model": {"config_overrides": NO_DROPOUT}, "optim": {"lr": 3e-2}},
                      # the first layer's prompts after the embedding layer: the text keeps its positions (session 24)
                      {"method": {"prompt_positions": False}},
                      # each layer's prompts start as real words' hidden states there (Li & Liang 2021; session 24)
                      {"method": {"init": "activations"}},
                      # keys and values learned directly in every layer, free of each other (P-Tuning v2's
                      # past_key_values; session 25), with the text moved back behind the prefix or where it was
                      {"method": {"form": "key_value"}}, {"method": {"form": "key_value", "prompt_positions": False}},
                      {"method": {"form": "key_value"}, "optim": {"lr": 3e-3}},
                      {"method": {"form": "key_value"}, "optim": {"lr": 3e-2}},
                      {"method": {"form": "key_value"}, "optim": {"lr": 1e-1}}],
    "ia3": [{}, {"optim": {"lr": 1e-2}}, {"optim": {"lr": 3e-2}}],
    "prompt_tuning": [{}, {"optim": {"lr": 1e-1}}, {"optim": {"lr": 3e-1}}, {"method": {"probe_epochs": 100}},
                      {"model": {"config_overrides": NO_DROPOUT}}],
    # the reference the goals are judged against: bench/run.py's sst2/full row (lr 1e-4), same split and epochs
    "full": [{"optim": {"lr": 1e-4}}],
}
WHOLE_SEARCH = {"adapter": [{}, {"optim": {"lr": 1e-3}}],
                "prefix_tuning": [{}, {"optim": {"lr": 3e-3}}]}
# Image candidates (adapter: residual 1x1-conv adapters on the CNN blocks; ia3: PEFT's scaling vectors), with `full`
# and `linear_probe` at their defaults as the references a parameter-efficient default has to stand beside.
VISION_SEARCH = {
    "adapter": [{}, {"optim": {"lr": 3e-3}}, {"optim": {"lr": 3e-4}}, {"method": {"reduction_factor": 8}}],
    "ia3": [{}, {"optim": {"lr": 1e-2}}, {"optim": {"lr": 1e-3}}],
    "full": [{}],
    "linear_probe": [{}],
}


@dataclass(frozen=True)
class Task:
    """One dataset of the search: its base config, what its score means, and whether it picks (or only confirms)."""

    title: str
    base: dict[str, Any]
    candidates: dict[str, list[dict[str, Any]]]
    split: str
    picks: bool  # True: the search's choice split (best epoch on it); False: held out (last epoch, nothing picked)


TASKS = {
    "sst2": Task("SST-2 search (MiniLM)", BASE, SEARCH, f"tune ({SEARCH_TUNE:,} train sentences)", picks=True),
    # a rate chosen on 10,000 sentences (625 steps) may not suit the whole train set (4,000+ steps): the same tune
    # split, trained on every other train sentence
    "sst2-whole": Task("SST-2 on the whole train set (MiniLM)", BASE, WHOLE_SEARCH,
                       f"tune ({SEARCH_TUNE:,} train sentences, the others trained on)", picks=True),
    "hymenoptera": Task("Hymenoptera search (EfficientNet-Lite0, 224 px, 10 epochs)",
                        {"model": {"name": VISION_MODEL, "image_size": 224}, "epochs": 10, "batch_size": 32},
                        VISION_SEARCH, "val (153 images, the choice split)", picks=True),
    "cifar10": Task("CIFAR-10 confirmation (EfficientNet-Lite0, 96 px, 3 epochs)",
                    {"model": {"name": VISION_MODEL, "image_size": 96}, "epochs": 3, "batch_size": 32},
                    VISION_SEARCH, "test (2,000 images, last epoch: held out, picks nothing)", picks=False),
    # hymenoptera's 153 val images could not separate the candidates (2026-12-05): a larger choice split, cut from
    # CIFAR-10 *train*, so that the test split stays the check
    "cifar10-choice": Task(f"CIFAR-10 choice split ({CIFAR_CHOICE:,} of the subset's train images held back)",
                           {"model": {"name": VISION_MODEL, "image_size": 96}, "epochs": 3, "batch_size": 32},
                           {m: VISION_SEARCH[m] for m in ("adapter", "ia3")},
                           f"{CIFAR_CHOICE:,} train images held back from training (the choice split; test unread)",
                           picks=True),
}
TEXT_TASKS = ("sst2", "sst2-whole")  # the SST-2 tasks: MiniLM, the search split
CHOICE_TASKS = {"hymenoptera": "hymenoptera val", "cifar10-choice": "CIFAR-10's held-back train images"}


def search_split(work: Path, whole: bool = False) -> tuple[Path, Path]:
    """10,000 train sentences to train on and 2,000 other train sentences to compare on (stratified, fixed);
    ``whole``: every train sentence but those 2,000 to train on (the same tune split)."""
    import pandas as pd

    out = work / "sst2_search"
    name = "train_whole.csv" if whole else "train.csv"
    if not (out / "tune.csv").is_file() or not (out / name).is_file():
        out.mkdir(parents=True, exist_ok=True)
        train = pd.read_csv(SST2 / "train.csv")
        picked = stratified_indices(train["label"].to_numpy(), SEARCH_TRAIN + SEARCH_TUNE)
        tune_pos = stratified_indices(train["label"].to_numpy()[picked], SEARCH_TUNE, seed=1)
        kept = (sorted(set(range(len(train))) - set(picked[tune_pos].tolist())) if whole
                else picked[sorted(set(range(len(picked))) - set(tune_pos))])
        train.iloc[kept].to_csv(out / f"{name}.tmp", index=False)
        (out / f"{name}.tmp").replace(out / name)
        train.iloc[picked[tune_pos]].to_csv(out / "tune.tmp", index=False)
        (out / "tune.tmp").replace(out / "tune.csv")
    return out / name, out / "tune.csv"


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def row_key(method: str, overrides: dict[str, Any], seed: int, task: str = "sst2") -> str:
    prefix = "search" if task == "sst2" else task  # the SST-2 rows' keys predate the image tasks
    return f"{prefix}/{method}/{json.dumps(overrides, sort_keys=True)}/seed{seed}"


def cifar_choice_npz(work: Path) -> Path:
    """The CIFAR-10 subset's train split cut in two (stratified, fixed): the rest to train on, ``CIFAR_CHOICE`` images
    to choose on (stored as the npz's test split, which hftransfer validates on); its test split is not in it."""
    import numpy as np

    out = work / f"cifar10_choice_{CIFAR_CHOICE}.npz"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with np.load(CIFAR_NPZ, allow_pickle=False) as z:
        labels = z["y_train"]
        held = stratified_indices(labels, CIFAR_CHOICE, seed=1)
        rest = np.setdiff1d(np.arange(len(labels)), held)
        arrays = {"x_train": z["x_train"][rest], "y_train": labels[rest], "x_test": z["x_train"][held],
                  "y_test": labels[held], "class_names": z["class_names"]}
    tmp = out.with_name(out.stem + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(out)
    return out


def task_data(task: str, work: Path) -> dict[str, Any]:
    """The ``data`` section of a task's runs (SST-2: the search split; images: the shared folders / npz)."""
    if task in TEXT_TASKS:
        train, validation = search_split(work, whole=task == "sst2-whole")
        return {"train": str(train), "validation": str(validation), "label_names": ["negative", "positive"]}
    if task == "cifar10-choice":
        return {"source": str(cifar_choice_npz(work))}
    return {"source": str(HYMENOPTERA if task == "hymenoptera" else CIFAR_NPZ)}


def run_row(method: str, overrides: dict[str, Any], seed: int, work: Path, task: str = "sst2") -> dict[str, Any]:
    import yaml

    import hftransfer

    spec = TASKS[task]
    out_dir = work / f"{task}_{method}_seed{seed}"
    config = _merge({**spec.base, "recipe": method, "seed": seed, "output_dir": str(out_dir),
                     "overwrite_output_dir": True, "progress_bar": False, "data": task_data(task, work)}, overrides)
    start = time.perf_counter()
    result = hftransfer.train(config)
    metrics = json.loads((result.output_dir / "metrics.json").read_text())
    resolved = yaml.safe_load((result.output_dir / "config.yaml").read_text())  # the config as resolved
    last = metrics["history"][-1]
    accuracy = metrics["final_eval"]["accuracy"] if spec.picks else last["eval_accuracy"]
    row = {"task": task, "method": method, "overrides": overrides, "seed": seed, "split": spec.split,
           "accuracy": accuracy, "best_epoch": metrics["best_epoch"],
           "per_epoch": [h["eval_accuracy"] for h in metrics["history"]],
           "lr": (resolved.get("optim") or {}).get("lr"), "method_options": resolved.get("method"),
           "method_defaults": registered_method_defaults(method),
           "train_samples_per_s": round(last.get("train_samples_per_s") or 0.0, 1),
           "train_time_s": round(last["train_time_s"], 1),
           "probe_s": round((metrics.get("head_warmup") or {}).get("probe_seconds", 0.0), 1),
           "wall_s": round(time.perf_counter() - start, 1),
           "date": time.strftime("%Y-%m-%d", time.gmtime()), **row_provenance()}
    shutil.rmtree(out_dir, ignore_errors=True)
    return row


def registered_lr(method: str, task: str) -> float:
    """The learning rate a ``{}`` candidate of ``method`` trains with today on ``task``'s backbone."""
    from hftransfer.recipes.registry import get_recipe
    from hftransfer.training.config import OptimConfig

    modality = "text" if task in TEXT_TASKS else "image"
    return (get_recipe(method).defaults_for(modality).get("optim") or {}).get("lr", OptimConfig.lr)


def registered_method_defaults(method: str) -> dict[str, Any]:
    """The defaults of ``method``'s own options (its config dataclass) as registered today."""
    from hftransfer.recipes.registry import get_recipe

    return get_recipe(method).config_cls().to_dict()


def stale_defaults(results: dict[str, Any], task: str, methods: list[str]) -> list[str]:
    """Stored ``{}`` rows of ``task`` that ran at another learning rate, or other method option defaults (rows that
    recorded them), than the ones registered now.

    ``{}`` means "the defaults registered when it ran"; once a registration changes, new ``{}`` seeds would be another
    candidate under the same label, and the means would mix the two."""
    stale = []
    for method in methods:
        stored = [r for r in _task_rows(results, task) if r["method"] == method and not r["overrides"]]
        now = registered_lr(method, task)
        then = sorted({r["lr"] for r in stored if r.get("lr") is not None})
        if then and then != [now]:
            rates = ", ".join(map(str, then))
            stale.append(f"{method} (stored `defaults` rows ran at lr {rates}; registered now: {now})")
        options = registered_method_defaults(method)
        moved = sorted({(k, repr(r["method_defaults"].get(k))) for r in stored if "method_defaults" in r
                        for k, v in options.items() if r["method_defaults"].get(k) != v})
        if moved:
            then_text = ", ".join(f"method.{k}={v}" for k, v in moved)
            now_text = ", ".join(f"{k}={options[k]!r}" for k in sorted({k for k, _ in moved}))
            stale.append(f"{method} (stored `defaults` rows ran with {then_text}; registered now: {now_text})")
    return stale


def _label(overrides: dict[str, Any]) -> str:
    return json.dumps(overrides) if overrides else "defaults"


def _task_rows(results: dict[str, Any], task: str) -> list[dict[str, Any]]:
    return [r for r in results.get("rows", {}).values() if r.get("task", "sst2") == task]


def _means(rows: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
    """Mean accuracy over seeds per (method, candidate label)."""
    groups: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        groups.setdefault((r["method"], _label(r["overrides"])), []).append(r["accuracy"])
    return {key: sum(v) / len(v) for key, v in groups.items()}


def choice_lines(results: dict[str, Any]) -> list[str]:
    """Per choice split and image method: its winner against the registered defaults, and whether CIFAR-10 test
    agrees."""
    held_out = _means(_task_rows(results, "cifar10"))
    lines = []
    for task, split in CHOICE_TASKS.items():
        picked = _means(_task_rows(results, task))
        for method in [m for m in TASKS[task].candidates if len(TASKS[task].candidates[m]) > 1]:
            scores = {label: acc for (m, label), acc in picked.items() if m == method}
            if "defaults" not in scores or len(scores) < len(TASKS[task].candidates[method]):
                continue
            best = max(scores, key=lambda label: (scores[label], label == "defaults"))  # ties keep the defaults
            line = (f"- `{method}`: {split} pick `{best}` ({100 * scores[best]:.2f} vs the defaults' "
                    f"{100 * scores['defaults']:.2f})")
            if best == "defaults":
                line += "; the registered defaults stay"
            if (method, best) in held_out and (method, "defaults") in held_out:
                gain = 100 * (held_out[method, best] - held_out[method, "defaults"])
                verdict = ("same candidate" if best == "defaults" else
                           "**confirmed**" if gain >= 0 else "**not confirmed**")
                line += (f"; CIFAR-10 test: {100 * held_out[method, best]:.2f} vs "
                         f"{100 * held_out[method, 'defaults']:.2f} ({gain:+.2f}): {verdict}")
            else:
                line += "; CIFAR-10 confirmation not run yet"
            tested = {label: acc for (m, label), acc in held_out.items() if m == method}
            top = max(tested, key=tested.get) if len(tested) > 1 else None
            if top is not None and top != best:
                line += (f" (for information, CIFAR-10 test ranks `{top}` first: {100 * tested[top]:.2f}; the test "
                         "split picks nothing)")
            lines.append(line + ".")
    return lines


def render(results: dict[str, Any]) -> str:
    lines = ["# Parameter-efficient defaults", "", "## " + TASKS["sst2"].title, "",
             f"MiniLM (`{MODEL}`), max_length {BASE['model']['max_length']}, batch {BASE['batch_size']}, "
             f"{BASE['epochs']} epochs. Trained on {SEARCH_TRAIN:,} SST-2 train sentences, compared on "
             f"{SEARCH_TUNE:,} other train sentences (`tune` split, accuracy in %; 0.05 points = one sentence); "
             "SST-2 dev not read. The chosen defaults are confirmed on dev by `bench/run.py`'s `sst2/<method>` rows "
             "(`RESULTS.md`).", "",
             "| method | overrides of the defaults then registered | lr | seed | tune acc | per epoch | samples/s |",
             "|:--|:--|--:|--:|--:|--:|--:|"]
    for r in sorted(_task_rows(results, "sst2"), key=lambda r: (r["method"], -r["accuracy"])):
        lines.append(f"| {r['method']} | `{_label(r['overrides'])}` | "
                     f"{r['lr']} | {r['seed']} | {100 * r['accuracy']:.2f} | "
                     f"{', '.join(f'{100 * a:.1f}' for a in r['per_epoch'])} | {r['train_samples_per_s']} |")
    whole = _task_rows(results, "sst2-whole")
    if whole:
        lines += ["", "## " + TASKS["sst2-whole"].title, "",
                  f"As above, trained on every SST-2 train sentence but the {SEARCH_TUNE:,} of the tune split "
                  "(about 65,000), compared on that split; SST-2 dev not read.", "",
                  "| method | overrides of the defaults then registered | lr | seed | tune acc | per epoch "
                  "| samples/s | date |",
                  "|:--|:--|--:|--:|--:|--:|--:|:--|"]
        for r in sorted(whole, key=lambda r: (r["method"], -r["accuracy"])):
            lines.append(f"| {r['method']} | `{_label(r['overrides'])}` | {r['lr']} | {r['seed']} | "
                         f"{100 * r['accuracy']:.2f} | {', '.join(f'{100 * a:.1f}' for a in r['per_epoch'])} | "
                         f"{r['train_samples_per_s']} | {r.get('date', '?')} |")
    for task in ("hymenoptera", "cifar10-choice", "cifar10"):
        rows = _task_rows(results, task)
        if not rows:
            continue
        spec = TASKS[task]
        lines += ["", "## " + spec.title, "",
                  f"`{VISION_MODEL}`, batch {spec.base['batch_size']}, each recipe's registered defaults otherwise. "
                  f"Accuracy in % on {spec.split}.", "",
                  "| method | overrides of the defaults then registered | lr | seed | acc | per epoch | samples/s "
                  "| date |",
                  "|:--|:--|--:|--:|--:|--:|--:|:--|"]
        for r in sorted(rows, key=lambda r: (r["method"], -r["accuracy"])):
            lines.append(f"| {r['method']} | `{_label(r['overrides'])}` | {r['lr']} | {r['seed']} | "
                         f"{100 * r['accuracy']:.2f} | {', '.join(f'{100 * a:.1f}' for a in r['per_epoch'])} | "
                         f"{r['train_samples_per_s']} | {r.get('date', '?')} |")
    choices = choice_lines(results)
    if choices:
        lines += ["", "Image defaults, chosen on a choice split and checked on CIFAR-10 test (mean over seeds):", "",
                  *choices]
    machine = results.get("machine", {})
    lines += ["", f"Machine (last run): {machine.get('cpu_model', '?')}, {machine.get('nproc', '?')} CPUs, hftransfer "
              f"git {machine.get('git_commit', '?')}.", "",
              "Commands (in order): " + ", ".join(f"`{c}`" for c in results.get("commands", [])), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="sst2",
                        help="sst2 / hymenoptera: the searches; cifar10: the images' confirmation")
    parser.add_argument("--methods", default=None, help="comma-separated (default: every method of the task); "
                        f"sst2: {', '.join(SEARCH)}; images: {', '.join(VISION_SEARCH)}")
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1")
    parser.add_argument("--rerun", action="store_true", help="run rows already in the results again")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "hftransfer-bench-peft")
    parser.add_argument("--only", default=None, metavar="REGEX",
                        help="run only the rows whose key matches (e.g. 'prefix_tuning/.*seed1$')")
    parser.add_argument("--render-only", action="store_true")
    args = parser.parse_args(argv)
    json_path, page = args.out / "peft_defaults.json", args.out / "peft_defaults.md"
    results = json.loads(json_path.read_text()) if json_path.is_file() else {"rows": {}, "commands": []}
    if not args.render_only:
        task = TASKS[args.task]
        methods = [m.strip() for m in (args.methods or ",".join(task.candidates)).split(",") if m.strip()]
        unknown = [m for m in methods if m not in task.candidates]
        if unknown:
            parser.error(f"--methods: no {args.task} candidates for {unknown}; it knows {sorted(task.candidates)}")
        needed = (SST2 / "train.csv" if args.task in TEXT_TASKS
                  else {"hymenoptera": HYMENOPTERA / "val"}.get(args.task, CIFAR_NPZ))
        if not needed.exists():
            parser.error(f"--task {args.task}: {needed} not found (the bench needs ../shared/data)")
        def to_run(key: str) -> bool:
            return (args.rerun or key not in results["rows"]) and not (args.only and not re.search(args.only, key))

        new_defaults = [m for m in methods if {} in task.candidates[m] and any(
            to_run(row_key(m, {}, seed, args.task)) for seed in range(args.seeds))]
        stale = stale_defaults(results, args.task, new_defaults)
        if stale:
            parser.error(f"--task {args.task}: the registered defaults changed since the stored rows ran: "
                         f"{'; '.join(stale)}. New `{{}}` rows would mix two candidates under one label: name the "
                         "former defaults explicitly in the candidate list (e.g. {'optim': {'lr': 0.001}}) and move "
                         "their rows to that key, or pass --out to a new folder.")
        offline_env()
        results["machine"] = machine_info()
        results["commands"].append("nice -n 19 .venv/bin/python bench/peft_defaults.py " + " ".join(
            argv if argv is not None else sys.argv[1:]))
        args.work_dir.mkdir(parents=True, exist_ok=True)
        for method in methods:
            for overrides in task.candidates[method]:
                for seed in range(args.seeds):
                    key = row_key(method, overrides, seed, args.task)
                    if not to_run(key):
                        continue
                    results["rows"][key] = run_row(method, overrides, seed, args.work_dir, args.task)
                    print(key, f"{100 * results['rows'][key]['accuracy']:.2f}", flush=True)
                    write_json(json_path, results)
    write_bench_page(page, render(results))
    print(page)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
