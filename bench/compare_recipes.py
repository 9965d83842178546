"""`hftransfer compare` on SST-2: linear_probe, lora and full on MiniLM, same data, budget and seeds, side by side.

Runs the shipped `recipes/configs/minilm_sst2_full.yaml` on a 2000-sentence stratified subset of SST-2 train for 2
epochs, checkpoints picked on 500 other train sentences (`validation`, the selection split), scored on the 872 dev
sentences (`test`, held out), 2 seeds per recipe. The runs (with their model folders) go to a temporary folder;
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
OVERRIDES = [f"data.train={SST2 / 'train.csv'}", "data.validation=null", f"data.test={SST2 / 'dev.csv'}",
             "data.max_train_samples=2000", "data.max_eval_samples=500", "epochs=2", "progress_bar=false"]


def main() -> int:
    if not SST2.is_dir():
        print(f"{SST2} is absent", file=sys.stderr)
        return 1
    offline_env()
    from hftransfer import compare

    with tempfile.TemporaryDirectory() as work:
        result = compare(REPO_ROOT / "recipes" / "configs" / "minilm_sst2_full.yaml",
                         ["linear_probe", "lora", "full"], seeds=2, output_dir=Path(work) / "compare",
                         overrides=OVERRIDES)
        OUT.mkdir(parents=True, exist_ok=True)
        for name in ("compare.json", "compare.md", "compare.png"):
            shutil.copyfile(Path(work) / "compare" / name, OUT / name)
    print(result.markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
