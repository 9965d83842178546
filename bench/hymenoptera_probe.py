"""The hyperparameter probe behind the hymenoptera `full` notes in results/RESULTS.md.

EfficientNet-Lite0 full fine-tuning at the bench's vision settings (224 px, 10 epochs, batch 32, SGD momentum 0.9,
lr 0.01, step decay at epoch 7), one change per setting; prints the validation accuracy of every epoch. The only
held-out data hymenoptera has is its validation split, so a setting picked from this output is picked on it.

    python bench/hymenoptera_probe.py                    # all settings (~1.5 min each on 2 CPU cores)
    python bench/hymenoptera_probe.py --only lp-ft-bb0.1
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import HYMENOPTERA  # noqa: E402


BASE = {
    "recipe": "full",
    "model": {"name": "packaged:efficientnet_lite0", "image_size": 224, "channels_last": True},
    "optim": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0},
    "scheduler": {"name": "step", "step_size_epochs": 7, "gamma": 0.1, "warmup_ratio": 0.0},
    "epochs": 10, "batch_size": 32, "augment": "default", "progress_bar": False, "seed": 42,
}
SETTINGS = {
    "no-clip": {"max_grad_norm": None},
    "no-clip-lr3e-3": {"max_grad_norm": None, "optim.lr": 0.003},
    "no-clip-cosine": {"max_grad_norm": None, "scheduler.name": "cosine"},
    "bb0.1": {"optim.backbone_lr_scale": 0.1},
    "lp-ft-bb0.1": {"optim.backbone_lr_scale": 0.1,
                    "unfreeze_schedule": [{"epoch": 0, "train": "head"}, {"epoch": 1, "train": "all"}]},
}


def config_for(overrides: dict, output_dir: Path) -> dict:
    config = copy.deepcopy(BASE)
    config["data"] = {"source": str(HYMENOPTERA)}
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    config.update(output_dir=str(output_dir), overwrite_output_dir=True)
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(SETTINGS), action="append", help="run only these settings")
    args = parser.parse_args(argv)
    if not HYMENOPTERA.is_dir():
        parser.error(f"hymenoptera data not found at {HYMENOPTERA} (set HFTRANSFER_BENCH_DATA)")
    import hftransfer

    with tempfile.TemporaryDirectory(prefix="hym-probe-") as work:
        for name in args.only or SETTINGS:
            start = time.perf_counter()
            result = hftransfer.train(config_for(SETTINGS[name], Path(work) / name))
            accs = [round(100 * h["eval_accuracy"], 2) for h in result.history]
            print(json.dumps({"setting": name, "changes": SETTINGS[name], "val_acc_per_epoch": accs,
                              "wall_s": round(time.perf_counter() - start)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
