"""``hftransfer.compare``: several recipes and/or backbones on the same data, seed and budget, side by side.

Each run (model x recipe x seed) is an ordinary ``hftransfer train`` in a fresh process (optionally under
``accelerate launch``), in ``output_dir/runs/<row>``. A run whose ``metrics.json`` exists is finished and kept, so a
killed compare continues where it stopped (an interrupted run resumes from its own checkpoint). The table
(compare.json, compare.md) and plot (compare.png: accuracy vs wall time and vs trainable parameters) summarise each
model x recipe as mean +- std over the seeds.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from hftransfer.backbones import check_backbone_name
from hftransfer.errors import ConfigurationError
from hftransfer.recipes import list_recipes
from hftransfer.utils.hub_ids import is_repo_id


logger = logging.getLogger(__name__)

LAUNCHERS = ("python", "accelerate")
CARD_SECTION = "comparison"  # <!-- hftransfer:begin comparison --> ... <!-- hftransfer:end comparison -->


@dataclass
class CompareRun:
    """One training run and what it measured (None where the run did not report it)."""

    model: str
    recipe: str
    seed: int
    run_dir: str
    status: str  # "done" | "failed"
    resumed: bool = False  # finished in an earlier compare call, kept as is
    validation: float | None = None  # best validation value of metric_for_best (the selection split)
    test: float | None = None  # test accuracy of the selected checkpoint (data.test), when given
    metric_for_best: str | None = None
    selection_split: str | None = None
    trainable_params: int | None = None
    all_params: int | None = None
    train_samples_per_s: float | None = None
    peak_rss_mb: float | None = None
    wall_s: float | None = None
    error: str | None = None


@dataclass
class CompareResult:
    runs: list[CompareRun]
    table: list[dict[str, Any]]  # one row per model x recipe: mean / std over seeds
    best: str | None  # "model / recipe" with the best mean validation value
    output_dir: Path
    files: list[str] = field(default_factory=list)
    card_path: Path | None = None  # the best run's model card, when the table was added to it
    pushed_url: str | None = None

    def markdown(self) -> str:
        head = ["model", "recipe", "seeds", "validation (selection)", "test", "trainable params", "train samples/s",
                "peak RSS MB", "wall s"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in self.table:
            lines.append("| " + " | ".join([
                f"`{row['model']}`", row["recipe"], f"{row['done']}/{row['seeds']}",
                _pm(row["validation"]) + (f" ({row['metric_for_best']}, {row['selection_split']})"
                                          if row["metric_for_best"] else ""),
                _pm(row["test"]), _int(row["trainable_params"]), _pm(row["train_samples_per_s"], 1),
                _pm(row["peak_rss_mb"], 0), _pm(row["wall_s"], 1)]) + " |")
        failed = [r for r in self.runs if r.status != "done"]
        notes = [f"- failed: `{r.model}` / {r.recipe} / seed {r.seed}: {r.error}" for r in failed]
        return "\n".join(["## Recipe comparison", "", *lines, "",
                          f"Best mean validation: {self.best or 'n/a'}. Mean +- std over seeds.", *notes, ""])


def _pm(stats: dict | None, digits: int = 4) -> str:
    if not stats or stats.get("mean") is None:
        return "n/a"
    text = f"{stats['mean']:.{digits}f}"
    return text + (f" +- {stats['std']:.{digits}f}" if stats.get("n", 0) > 1 else "")


def _int(value: int | None) -> str:
    return "n/a" if value is None else f"{value:,}"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(text))


def shared_training_options(raw: dict) -> list[str]:
    """The optimizer / schedule values a config sets explicitly (``optim.lr=5e-05``): in a compare of several recipes
    they replace each recipe's own defaults."""
    return [f"{section}.{key}={value}" for section in ("optim", "scheduler")
            for key, value in (raw.get(section) or {}).items()]


def _plan(config: str | Path | dict, recipes: Sequence[str] | None, models: Sequence[str] | None, seeds: int,
          overrides: Sequence[str]) -> tuple[dict, list[tuple[str, str, int, dict]]]:
    """Every run's full config, validated (unknown recipes, models, options) before anything runs."""
    from hftransfer.training.config import TrainConfig, apply_overrides, read_yaml_config  # heavy: training stack

    raw = read_yaml_config(config) if isinstance(config, (str, Path)) else dict(config)
    raw = apply_overrides(raw, list(overrides))
    base = TrainConfig.from_dict(raw)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigurationError(f"seeds={seeds!r} must be a positive number of repeats per row (default 1).")
    recipes = list(recipes or [base.recipe])
    models = list(models or [base.model.name])
    unknown = [r for r in recipes if r not in list_recipes()]
    if unknown:
        raise ConfigurationError(f"recipes {unknown} are unknown; choose from {list_recipes()}.")
    for name in (recipes, models):
        if len(set(name)) != len(name):
            raise ConfigurationError(f"{name} lists an entry twice; give each once.")
    for model in models:
        check_backbone_name(model, pretrained=base.model.pretrained)
    shared = shared_training_options(raw)
    if len(recipes) > 1 and shared:
        logger.warning("The config sets %s: every recipe (%s) trains with these values instead of its own defaults. "
                       "Remove them from the config to compare each recipe at its defaults.", ", ".join(shared),
                       ", ".join(recipes))
    plan = []
    for model in models:
        for recipe in recipes:
            for i in range(seeds):
                seed = base.seed + i
                row = apply_overrides(raw, [f"recipe={recipe}", f"seed={seed}"])
                row["model"] = {**(row.get("model") or {}), "name": model}
                TrainConfig.from_dict(row)  # a recipe whose options do not fit this config fails here
                plan.append((model, recipe, seed, row))
    return raw, plan


def _read_run(run: CompareRun, metrics_path: Path) -> None:
    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    run.validation = metrics.get("best_metric")
    run.metric_for_best = metrics.get("metric_for_best")
    run.selection_split = metrics.get("selection_split")
    test = metrics.get("test_eval") or {}
    run.test = test.get("accuracy") if isinstance(test, dict) else None
    params = metrics.get("parameters") or {}
    run.trainable_params, run.all_params = params.get("trainable_params"), params.get("all_params")
    speeds = [h["train_samples_per_s"] for h in metrics.get("history", []) if "train_samples_per_s" in h]
    run.train_samples_per_s = float(np.mean(speeds)) if speeds else None
    extra = metrics_path.parent / "compare_run.json"
    if extra.is_file():
        measured = json.loads(extra.read_text(encoding="utf-8"))
        run.peak_rss_mb, run.wall_s = measured.get("peak_rss_mb"), measured.get("wall_s")


def _launch(config_path: Path, run_dir: Path, launcher: str, num_processes: int | None, log: Path
            ) -> tuple[int, float, float]:
    """Run ``hftransfer train`` in a fresh process: (exit code, wall seconds, peak RSS MB of its largest process)."""
    train = ["-m", "hftransfer.cli", "train", str(config_path), f"output_dir={run_dir}", "progress_bar=false"]
    if launcher == "accelerate":
        procs = ["--num_processes", str(num_processes)] if num_processes else []
        command = [sys.executable, "-m", "accelerate.commands.launch", *procs, *train]
    else:
        command = [sys.executable, *train]
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy())
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.perf_counter() - start, usage.ru_maxrss / 1024.0  # Linux: kilobytes


def compare(
    config: str | Path | dict,
    recipes: Sequence[str] | None = None,
    models: Sequence[str] | None = None,
    *,
    seeds: int = 1,
    output_dir: str | Path = "compare",
    overrides: Sequence[str] = (),
    launcher: str = "python",
    num_processes: int | None = None,
    card: bool = False,
    push_to: str | None = None,
) -> CompareResult:
    """Train every model x recipe (x seed) of ``config`` one after another in fresh processes and tabulate them.

    Args:
        config: a training YAML (or shipped example name) or config dict; its data, epochs, batch size and seed are
            shared by every run. ``overrides``: ``key=value`` strings applied to it first.
        recipes / models: default the config's own recipe / model.
        seeds: repeats per row (seed, seed + 1, ...); the table reports mean +- std.
        launcher: "python" or "accelerate" (``accelerate launch``, with ``num_processes`` when given).
        card: add the table as a section of the best run's model card (``runs/<best>/model/README.md``).
        push_to: then push that model folder to this hub repo id.
    """
    if launcher not in LAUNCHERS:
        raise ConfigurationError(f"launcher={launcher!r} is invalid; choose one of {list(LAUNCHERS)}.")
    if push_to is not None:
        if not is_repo_id(push_to, namespaced=True):
            raise ConfigurationError(f"push_to={push_to!r} is not a hub repo id; use 'namespace/name'.")
        card = True
    _, plan = _plan(config, recipes, models, seeds, overrides)
    out = Path(output_dir)
    (out / "configs").mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    runs = []
    for model, recipe, seed, row in plan:
        name = f"{_slug(model)}--{recipe}--seed{seed}"
        run_dir = out / "runs" / name
        run = CompareRun(model, recipe, seed, str(run_dir), status="done")
        if (run_dir / "metrics.json").is_file():
            run.resumed = True
        else:
            config_path = out / "configs" / f"{name}.yaml"
            config_path.write_text(yaml.safe_dump(row, sort_keys=False), encoding="utf-8")
            code, wall, peak = _launch(config_path, run_dir, launcher, num_processes, out / "logs" / f"{name}.log")
            if code != 0 or not (run_dir / "metrics.json").is_file():
                tail = (out / "logs" / f"{name}.log").read_text(encoding="utf-8", errors="replace").strip()
                run.status, run.error = "failed", f"exit code {code}: " + (tail.splitlines() or [""])[-1][:300]
                runs.append(run)
                continue
            (run_dir / "compare_run.json").write_text(json.dumps({"wall_s": wall, "peak_rss_mb": peak}))
        _read_run(run, run_dir / "metrics.json")
        runs.append(run)
    result = CompareResult(runs, summarise(runs), None, out)
    done = [r for r in result.table if r["validation"]]
    if done:
        top = max(done, key=lambda r: r["validation"]["mean"])
        result.best = f"{top['model']} / {top['recipe']}"
    _write(result)
    if card and result.best is not None:
        best_run = max((r for r in runs if r.status == "done" and r.validation is not None
                        and f"{r.model} / {r.recipe}" == result.best), key=lambda r: r.validation)
        model_dir = Path(best_run.run_dir) / "model"
        from hftransfer.hub.card import add_card_section  # heavy: huggingface_hub, only with a card

        result.card_path = add_card_section(model_dir / "README.md", result.markdown(), CARD_SECTION)
        if push_to is not None:
            from hftransfer.hub.push import push_folder  # heavy: huggingface_hub, only when pushing

            result.pushed_url = push_folder(model_dir, push_to, commit_message="hftransfer compare: add comparison")
    return result


def summarise(runs: list[CompareRun]) -> list[dict[str, Any]]:
    """One row per model x recipe (in run order): mean, std (ddof 1) and count of each measure over its seeds."""
    groups: dict[tuple[str, str], list[CompareRun]] = {}
    for run in runs:
        groups.setdefault((run.model, run.recipe), []).append(run)
    table = []
    for (model, recipe), group in groups.items():
        done = [r for r in group if r.status == "done"]
        table.append({"model": model, "recipe": recipe, "seeds": len(group), "done": len(done),
                      **{attr: _stats(done, attr) for attr in ("validation", "test", "wall_s", "train_samples_per_s",
                                                               "peak_rss_mb")},
                      "trainable_params": done[0].trainable_params if done else None,
                      "metric_for_best": done[0].metric_for_best if done else None,
                      "selection_split": done[0].selection_split if done else None})
    return table


def _stats(runs: list[CompareRun], attr: str) -> dict | None:
    values = [getattr(r, attr) for r in runs if getattr(r, attr) is not None]
    if not values:
        return None
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "n": len(values)}


def _write(result: CompareResult) -> None:
    out = result.output_dir
    result.files = ["compare.json", "compare.md", "compare.png"]
    payload = {"runs": [dataclasses.asdict(r) for r in result.runs], "table": result.table, "best": result.best}
    for name, text in (("compare.json", json.dumps(payload, indent=2)), ("compare.md", result.markdown())):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out / name)
    _plot(result, out / "compare.png")


def plotted_split(rows: list[dict]) -> str:
    """The plot shows held-out test accuracy when every row has it, else the validation (selection) metric."""
    return "test" if rows and all(r["test"] for r in rows) else "validation"


def _plot(result: CompareResult, path: Path) -> None:
    import matplotlib  # optional dependency

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # optional dependency

    rows = [r for r in result.table if r["validation"] and r["wall_s"]]
    split = plotted_split(rows)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for row in rows:
        label = f"{row['model']} / {row['recipe']}"
        y, err = row[split]["mean"], row[split]["std"]
        axes[0].errorbar(row["wall_s"]["mean"], y, yerr=err, fmt="o", capsize=3, label=label)
        if row["trainable_params"]:
            axes[1].errorbar(row["trainable_params"], y, yerr=err, fmt="o", capsize=3, label=label)
    metric = next((r["metric_for_best"] for r in rows if r["metric_for_best"]), "validation")
    axes[0].set_xlabel("wall time per run (s)")
    axes[1].set_xlabel("trainable parameters")
    axes[1].set_xscale("log")
    for ax in axes:
        ax.set_ylabel("test accuracy (held out)" if split == "test" else f"validation {metric} (selection split)")
        ax.grid(alpha=0.3)
    if rows:
        axes[0].legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def add_compare_parser(sub) -> None:
    """``hftransfer compare CONFIG --recipes a,b [--models x,y] [--seeds N] [key=value ...]``."""
    p = sub.add_parser("compare", help="train several recipes / backbones on the same data, seed and budget (fresh "
                       "process each, resumable) and tabulate them")
    p.add_argument("config", help="training YAML or shipped example name; its data, epochs and seed are shared")
    p.add_argument("overrides", nargs="*", help="dotted overrides applied to every run: epochs=3 data.source=...")
    p.add_argument("--recipes", default=None, help="comma-separated recipes (default: the config's)")
    p.add_argument("--models", default=None, help="comma-separated model names (default: the config's)")
    p.add_argument("--seeds", type=int, default=1, help="repeats per row (seed, seed+1, ...): mean +- std")
    p.add_argument("--output-dir", default="compare", help="runs, logs, compare.json/.md/.png (default ./compare)")
    p.add_argument("--accelerate", action="store_true", help="run each training under `accelerate launch`")
    p.add_argument("--num-processes", type=int, default=None, help="processes per run with --accelerate")
    p.add_argument("--card", action="store_true", help="add the table to the best run's model card")
    p.add_argument("--push-to", default=None, help="push the best run's model (with the card section) to this repo")
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args) -> int:
    def split(text: str | None) -> list[str] | None:
        return [x.strip() for x in text.split(",") if x.strip()] if text else None

    result = compare(args.config, split(args.recipes), split(args.models), seeds=args.seeds,
                     output_dir=args.output_dir, overrides=args.overrides,
                     launcher="accelerate" if args.accelerate else "python", num_processes=args.num_processes,
                     card=args.card, push_to=args.push_to)
    print(result.markdown())
    print(f"compare.json, compare.md, compare.png in {result.output_dir}")
    if result.card_path:
        print(f"model card section added: {result.card_path}" + (f"; pushed: {result.pushed_url}"
                                                                   if result.pushed_url else ""))
    failed = [r for r in result.runs if r.status != "done"]
    return 1 if failed else 0
