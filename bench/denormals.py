"""Denormal floats on CPU (session 24): the same training with denormals kept and flushed to zero, side by side.

``prefix_tuning`` at its registered defaults on MiniLM trained at 173-178 samples/s on SST-2 (lr 1e-2), against
250-267 at lr 5e-3 on the same CPU model: the work per step is the same, so the suspect is denormal numbers (below
1.2e-38), which x86 CPUs compute slowly, in the attention over the learned prompts. This script trains the same
config twice in one process per run, alternating: ``kept`` (PyTorch's default) and ``flushed``
(``torch.set_flush_denormal(True)`` before training), on the 10,000-sentence search split of
``bench/peft_defaults.py``, and reports train samples/s and tune-split accuracy of each.

    nice -n 19 .venv/bin/python bench/denormals.py             # kept, flushed, kept, flushed
    .venv/bin/python bench/denormals.py --render-only
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from peft_defaults import BASE, task_data  # noqa: E402

from common import SST2, machine_info, offline_env, row_provenance, write_bench_page, write_json  # noqa: E402


RESULTS = Path(__file__).resolve().parent / "results"
MODES = ("kept", "flushed")


def run_one(mode: str, work: Path) -> dict:
    """One training in a fresh process (so the denormal setting is that process's own)."""
    config = {**BASE, "recipe": "prefix_tuning", "seed": 0, "progress_bar": False, "overwrite_output_dir": True,
              "data": task_data("sst2", work), "output_dir": str(work / f"denormals_{mode}")}
    code = (
        "import json, sys, torch, hftransfer\n"
        f"flushed = {mode == 'flushed'} and torch.set_flush_denormal(True)\n"
        f"result = hftransfer.train(json.loads({json.dumps(json.dumps(config))}))\n"
        "row = result.history[-1]\n"
        "print(json.dumps({'flushed': bool(flushed), 'train_samples_per_s': row.get('train_samples_per_s'),\n"
        "                  'accuracy': result.best_metric, 'history': [{k: r.get(k) for k in\n"
        "                  ('epoch', 'train_samples_per_s', 'eval_accuracy')} for r in result.history]}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def render(results: dict) -> str:
    lines = ["# Denormal floats: prefix_tuning trained with denormals kept and flushed", "",
             "MiniLM, `prefix_tuning` at its registered defaults, 2 epochs on the 10,000-sentence search split of "
             "`bench/peft_defaults.py`, scored on its 2,000-sentence tune split; each run a fresh process, "
             "alternating.", "",
             "| run | denormals | train samples/s (per epoch) | tune accuracy (%) | CPU |", "|--:|:--|--:|--:|:--|"]
    for i, row in enumerate(results["rows"]):
        speeds = ", ".join(f"{h['train_samples_per_s']:.1f}" for h in row["history"])
        lines.append(f"| {i + 1} | {row['mode']} | {speeds} | {100 * row['accuracy']:.2f} | {row['cpu']} |")
    by_mode = {m: [r["history"][-1]["train_samples_per_s"] for r in results["rows"] if r["mode"] == m]
               for m in MODES}
    if all(by_mode.values()):
        ratio = (sum(by_mode["flushed"]) / len(by_mode["flushed"])) / (sum(by_mode["kept"]) / len(by_mode["kept"]))
        lines += ["", f"Flushed / kept, last-epoch train samples/s (mean over runs): **{ratio:.2f}x**."]
    lines += ["", "Commands: " + ", ".join(f"`{c}`" for c in results["commands"]), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="kept/flushed pairs")
    parser.add_argument("--render-only", action="store_true")
    args = parser.parse_args(argv)
    json_path = RESULTS / "denormals.json"
    results = json.loads(json_path.read_text()) if json_path.is_file() else {"rows": [], "commands": []}
    if not args.render_only:
        if not (SST2 / "train.csv").exists():
            parser.error(f"{SST2} not found (the bench needs ../shared/data)")
        offline_env()
        results["machine"] = machine_info()
        results["commands"].append("nice -n 19 .venv/bin/python bench/denormals.py " + " ".join(
            argv if argv is not None else sys.argv[1:]))
        work = Path(tempfile.gettempdir()) / "hftransfer-bench-peft"
        for _ in range(args.repeats):
            for mode in MODES:
                row = {"mode": mode, **row_provenance(), **run_one(mode, work)}
                print(mode, row["train_samples_per_s"], row["accuracy"], flush=True)
                results["rows"].append(row)
                write_json(json_path, results)
    write_bench_page(RESULTS / "denormals.md", render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
