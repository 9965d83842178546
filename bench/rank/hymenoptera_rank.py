"""Does `hftransfer rank` order backbones as a linear probe does? Hymenoptera, EfficientNet-Lite0/1/2 + a random floor.

1. `hftransfer.rank` on the training split (245 images: the default sample of 2000 takes all of it), with k-fold
   probe accuracy on the features, into bench/results/rank/ (rank.json, rank.md, rank.png), timed from a cold cache.
2. One `linear_probe` run per candidate with the shipped recipe config
   (recipes/configs/efficientnet_lite0_hymenoptera_linear_probe.yaml, only model.name changed; random init via
   model.pretrained=false), no shared cache, timed; its best validation accuracy (153 held-out images) is the truth.
3. Kendall tau between each metric and the measured accuracy; written to bench/results/rank.md.

    nice -n 19 env OMP_NUM_THREADS=1 python bench/rank/hymenoptera_rank.py
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import HYMENOPTERA, REPO_ROOT, machine_info, offline_env  # noqa: E402


CANDIDATES = ["packaged:efficientnet_lite0", "packaged:efficientnet_lite1", "packaged:efficientnet_lite2",
              "random:timm:efficientnet_lite0"]
LP_CONFIG = REPO_ROOT / "recipes" / "configs" / "efficientnet_lite0_hymenoptera_linear_probe.yaml"
RESULTS = REPO_ROOT / "bench" / "results"


def linear_probe(candidate: str, output_dir: Path) -> dict:
    import yaml

    from hftransfer import train

    config = yaml.safe_load(LP_CONFIG.read_text())
    name = candidate.removeprefix("random:")
    config["model"] = {**config.get("model", {}), "name": name, "pretrained": not candidate.startswith("random:")}
    config.update(data={"source": str(HYMENOPTERA)}, output_dir=str(output_dir), progress_bar=False,
                  overwrite_output_dir=True)
    start = time.perf_counter()
    result = train(config)
    return {"best_accuracy": result.best_metric, "best_epoch": result.best_epoch,
            "seconds": time.perf_counter() - start}


def kendall(a: list, b: list) -> float | None:
    from scipy.stats import kendalltau

    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    if len(pairs) < 2:
        return None
    tau = kendalltau(*zip(*pairs)).statistic
    return float(tau) if tau == tau else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=2000)
    args = parser.parse_args(argv)
    if not HYMENOPTERA.is_dir():
        print(f"{HYMENOPTERA} is absent", file=sys.stderr)
        return 1
    offline_env()
    from hftransfer import rank

    with tempfile.TemporaryDirectory() as work:
        start = time.perf_counter()
        ranked = rank({"source": str(HYMENOPTERA)}, CANDIDATES, sample=args.sample, output_dir=RESULTS / "rank",
                      cache_dir=Path(work) / "features", kfold=True, progress=False)
        rank_seconds = time.perf_counter() - start
        start = time.perf_counter()  # the same call again: features come from the cache
        rank({"source": str(HYMENOPTERA)}, CANDIDATES, sample=args.sample, output_dir=None,
             cache_dir=Path(work) / "features", kfold=True, progress=False)
        cached_seconds = time.perf_counter() - start
        probes = {c: linear_probe(c, Path(work) / c.replace(":", "_")) for c in CANDIDATES}

    rows = {row["candidate"]: row for row in ranked.rows}
    accuracy = [probes[c]["best_accuracy"] for c in CANDIDATES]
    taus = {m: kendall([rows[c]["scores"][m] for c in CANDIDATES], accuracy) for m in ranked.metrics}
    taus["average rank (negated)"] = kendall([-rows[c]["average_rank"] for c in CANDIDATES], accuracy)
    best = max(CANDIDATES, key=lambda c: probes[c]["best_accuracy"])
    report = {"command": "nice -n 19 env OMP_NUM_THREADS=1 python bench/rank/hymenoptera_rank.py",
              "machine": machine_info(), "rank_seconds": rank_seconds, "rank_cached_seconds": cached_seconds,
              "rank": ranked.to_dict(),
              "linear_probe": probes, "kendall_tau_vs_linear_probe_accuracy": taus}
    (RESULTS / "rank.json").write_text(json.dumps(report, indent=2, default=str))
    (RESULTS / "rank.md").write_text(render(ranked, probes, taus, rank_seconds, cached_seconds, best))
    print((RESULTS / "rank.md").read_text())
    return 0


def render(ranked, probes: dict, taus: dict, rank_seconds: float, cached_seconds: float, best: str) -> str:
    rows = {row["candidate"]: row for row in ranked.rows}
    metrics = ranked.metrics
    head = ["candidate", *metrics, "avg rank", "linear_probe val acc", "lp run s", "rank feature s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in CANDIDATES:
        r = rows[c]
        cells = [f"`{c}`"] + ["n/a" if r["scores"][m] is None else f"{r['scores'][m]:.4g} ({r['ranks'][m]})"
                              for m in metrics]
        cells += [f"{r['average_rank']:.2f}", f"{probes[c]['best_accuracy']:.4f}", f"{probes[c]['seconds']:.1f}",
                  f"{r['feature_seconds']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    tau_lines = ["| metric | Kendall tau vs linear_probe accuracy |", "|---|---|"]
    tau_lines += [f"| {m} | {'n/a' if t is None else f'{t:.2f}'} |" for m, t in taus.items()]
    return "\n".join([
        "# `hftransfer rank` on hymenoptera vs measured linear-probe accuracy",
        "",
        "Command: `nice -n 19 env OMP_NUM_THREADS=1 python bench/rank/hymenoptera_rank.py` (2 shared CPU cores). "
        f"Rank sample: {ranked.sample_size} training images (all of train), {ranked.num_classes} classes; "
        "accuracy: best validation epoch of the shipped linear_probe config "
        "(`recipes/configs/efficientnet_lite0_hymenoptera_linear_probe.yaml`, only `model.name` / "
        "`model.pretrained` changed) on the 153 validation images. Figure: `results/rank/rank.png`.",
        "",
        *lines,
        "",
        f"Recommendation: `{ranked.recommendation}` (confidence {ranked.confidence}: {ranked.confidence_reason}). "
        f"Best measured: `{best}`.",
        "",
        *tau_lines,
        "",
        f"Time: rank of all {len(CANDIDATES)} candidates (cold feature cache, incl. k-fold probe) "
        f"{rank_seconds:.1f} s (forward passes {sum(r['feature_seconds'] for r in ranked.rows):.1f} s), again from "
        f"the cache {cached_seconds:.1f} s; one linear_probe run of the best candidate {probes[best]['seconds']:.1f} s"
        f" (all four: {sum(p['seconds'] for p in probes.values()):.1f} s).",
        "",
    ])


if __name__ == "__main__":
    sys.exit(main())
