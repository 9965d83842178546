"""Summarise a ``bench/gpu_check.sh`` result folder: one row per run (precision, steps, throughput, accuracy).

    python bench/gpu_check_report.py bench/results/gpu_check/<time> [--failed NAME ...]

Reads ``runs/*/metrics.json`` (written by hftransfer's training engine), writes ``summary.json`` and ``summary.md``
next to them and prints the table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def summarize_run(metrics: dict[str, Any]) -> dict[str, Any]:
    """Steps, training samples/s over the whole run (time-weighted over epochs) and the final accuracy of one run."""
    history = metrics["history"]
    seconds = sum(row["train_time_s"] for row in history)
    samples = sum(row["train_samples_per_s"] * row["train_time_s"] for row in history)
    return {
        "recipe": metrics["recipe"], "model": metrics["model"], "mixed_precision": metrics["mixed_precision"],
        "num_processes": metrics["num_processes"], "steps": history[-1]["step"], "epochs": len(history),
        "train_time_s": round(seconds, 2), "train_samples_per_s": round(samples / seconds, 1) if seconds else None,
        "accuracy": metrics["final_eval"]["accuracy"], "feature_cache": metrics.get("feature_cache", False),
    }


def render(rows: dict[str, dict[str, Any]], failed: list[str]) -> str:
    lines = ["| run | recipe | precision | processes | steps | train samples/s | train s | accuracy |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['recipe']} | {r['mixed_precision']} | {r['num_processes']} | {r['steps']} | "
                     f"{r['train_samples_per_s']} | {r['train_time_s']} | {r['accuracy']:.4f} |")
    if failed:
        lines += ["", "Failed steps (logs next to this file): " + ", ".join(failed)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--failed", nargs="*", default=[], help="names of the steps that failed")
    args = parser.parse_args(argv)
    rows = {}
    for path in sorted((args.folder / "runs").glob("*/metrics.json")):
        rows[path.parent.name] = summarize_run(json.loads(path.read_text()))
    machine = args.folder / "machine.txt"
    table = render(rows, args.failed)
    (args.folder / "summary.json").write_text(json.dumps({"runs": rows, "failed": args.failed}, indent=2) + "\n")
    header = f"# GPU check {args.folder.name}\n\n```\n{machine.read_text() if machine.exists() else ''}```\n\n"
    (args.folder / "summary.md").write_text(header + table)
    print(table, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
