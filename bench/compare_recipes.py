"""`hftransfer compare` on SST-2: linear_probe, lora and full on MiniLM, same data, budget and seeds, side by side.

MiniLM on a 2000-sentence stratified subset of SST-2 train for 2 epochs, each recipe with its own registered
defaults (the config sets no optimizer or schedule: a learning rate set there would apply to every recipe),
checkpoints picked on 500 other train sentences (`validation`, the selection split), scored on the 872 dev sentences
(`test`, held out), 2 seeds per recipe. The runs (with their model folders) go to a temporary folder;
compare.json, compare.md and compare.png are copied to `results/compare/`.

    nice -n 19 .venv/bin/python bench/compare_recipes.py
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO_ROOT, SST2, offline_env  # noqa: E402


OUT = REPO_ROOT / "bench" / "results" / "compare"
CONFIG = {
    "model": {"name": "packaged:all-MiniLM-L6-v2", "max_length": 66},
    "data": {"train": str(SST2 / "train.csv"), "test": str(SST2 / "dev.csv"), "text_column": "text",
             "label_column": "label", "label_names": ["negative", "positive"], "max_train_samples": 2000,
             "max_eval_samples": 500},
    "epochs": 2, "batch_size": 32, "mixed_precision": "auto", "progress_bar": False,
}


def main() -> int:
    if not SST2.is_dir():
        print(f"{SST2} is absent", file=sys.stderr)
        return 1
    offline_env()
    from hftransfer import compare

    with tempfile.TemporaryDirectory() as work:
        result = compare(CONFIG, ["linear_probe", "lora", "full"], seeds=2, output_dir=Path(work) / "compare")
        OUT.mkdir(parents=True, exist_ok=True)
        for name in ("compare.json", "compare.md", "compare.png"):
            shutil.copyfile(Path(work) / "compare" / name, OUT / name)
    print(result.markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
