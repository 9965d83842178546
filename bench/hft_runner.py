"""Runs one hftransfer training row through ``TransferTrainer`` with timing probes (bench code only).

Training time = the engine's own per-epoch loop time (``history[i]["train_time_s"]``, evaluation excluded) plus, for
linear probing, the one-off feature extraction. CPU seconds of the same phases are measured alongside, since wall
time on a shared 2-core machine depends on what else runs.
"""

from __future__ import annotations

import tempfile
from typing import Any

from common import MemoryMonitor, PhaseTimer, Stopwatch


def run_hftransfer(config_dict: dict[str, Any], spec: dict[str, Any], mon: MemoryMonitor) -> dict[str, Any]:
    from hftransfer.training import Callback, TrainConfig, TransferTrainer

    clock = Stopwatch()
    config_dict = {**config_dict, "output_dir": tempfile.mkdtemp(prefix="hft-bench-", dir=spec["work_dir"]),
                   "overwrite_output_dir": True, "progress_bar": False, "seed": spec.get("seed", 42)}
    config = TrainConfig.from_dict(config_dict)
    phases = PhaseTimer()
    curve: list[dict[str, float]] = []
    marks: dict[str, float] = {}

    class TimedTrainer(TransferTrainer):
        def _cache_features(self, *args, **kwargs):
            with phases("cache"):
                return super()._cache_features(*args, **kwargs)

        def _train_epoch(self, *args, **kwargs):
            with phases("epoch"):
                return super()._train_epoch(*args, **kwargs)

        def evaluate(self, *args, **kwargs):
            with phases("eval"):
                return super().evaluate(*args, **kwargs)

        def _track_best(self, *args, **kwargs):
            with phases("save"):
                return super()._track_best(*args, **kwargs)

        def _checkpoint(self, *args, **kwargs):
            with phases("save"):
                return super()._checkpoint(*args, **kwargs)

    class Probe(Callback):
        def on_train_begin(self, trainer):
            mon.mark_loaded()
            marks["loaded_at_s"] = clock()

        def on_epoch_end(self, trainer, state, metrics):
            curve.append({"epoch": metrics["epoch"], "accuracy": metrics["eval_accuracy"],
                          "train_time_s": phases.wall.get("cache", 0.0)
                          + sum(r["train_time_s"] for r in state["history"])})

    trainer = TimedTrainer(config, callbacks=[Probe()])
    result = trainer.train()
    wall = clock()
    cache_s = phases.wall.get("cache", 0.0)
    train_time = sum(r["train_time_s"] for r in result.history) + cache_s
    # _checkpoint runs after the epoch's callbacks but inside _train_epoch; eval and _track_best too.
    train_cpu = (phases.cpu.get("epoch", 0.0) - phases.cpu.get("eval", 0.0) - phases.cpu.get("save", 0.0)
                 + phases.cpu.get("cache", 0.0))
    n_train = len(trainer.data.train)
    model = result.model
    params = model.trainable_summary() if model is not None else {}
    out = {
        "train_samples": n_train,
        "eval_samples": len(trainer.data.validation),
        "train_time_s": train_time,
        "train_cpu_s": train_cpu,
        "feature_cache_s": cache_s,
        "samples_per_s": n_train * config.epochs / train_time,
        "samples_per_cpu_s": n_train * config.epochs / max(train_cpu, 1e-9),
        "wall_s": wall,
        "setup_s": marks.get("loaded_at_s"),
        "eval_s": phases.wall.get("eval", 0.0),
        "save_s": phases.wall.get("save", 0.0),
        "accuracy": result.history[-1].get("eval_accuracy"),  # last epoch, as for the peers
        "accuracy_best": result.final_metrics.get("accuracy"),  # what hftransfer keeps (best epoch)
        "trainable_params": params.get("trainable_params"),
        "all_params": params.get("all_params"),
        "curve": curve,
        "feature_mode": trainer.feature_mode,
    }
    compile_s = sum(r.get("compile_time_s", 0.0) for r in result.history)
    if config.model.compile:  # one-off, excluded from train_time_s (as the engine reports it)
        out["compile_time_s"] = compile_s
    if model is not None and config.recipe == "lora":
        targets = getattr(trainer.recipe, "method", None) and model.method.config.resolved_targets
        out["lora_targets"] = sorted({t.rsplit(".", 1)[-1] for t in targets or []}) or None
    return out
