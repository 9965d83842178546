"""The one training loop every recipe runs, on ``accelerate``.

Covers CPU, multi-process (``accelerate launch --multi_gpu``; gloo on CPU), single/multi GPU and bf16/fp16 mixed
precision. ``batch_size`` is the *global* batch: accelerate splits each batch across processes, so one config gives
the same optimisation whatever the number of processes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from hftransfer.backbones.cpu_fast_path import disable_cpu_fast_path
from hftransfer.data import LoadedData, load_data
from hftransfer.modeling import AutoTransfer
from hftransfer.objectives import StepInfo
from hftransfer.recipes import get_recipe
from hftransfer.training import checkpoint as ckpt
from hftransfer.training.accelerator import build_accelerator, cpu_process_group
from hftransfer.training.auto_precision import resolve_mixed_precision, warn_slow_bf16
from hftransfer.training.callbacks import Callback
from hftransfer.training.config import TrainConfig, apply_overrides
from hftransfer.training.domain import DomainRun, selection_key
from hftransfer.training.freezing import apply_stage, depth_map, set_train_mode, stage_at
from hftransfer.training.head_warmup import warm_up_head
from hftransfer.training.mixup import MixFn, build_mixup
from hftransfer.training.model_setup import fit_model, load_model_with_method
from hftransfer.training.optim import add_module_groups, build_optimizer, build_scheduler
from hftransfer.training.preflight import check_accelerator, check_against_data, preflight, prepare_output_dir
from hftransfer.training.reporting import publish_run, run_summary
from hftransfer.training.run_checkpoints import RunCheckpoints
from hftransfer.training.run_data import (
    class_weight_tensor,
    train_eval_loaders,
    use_feature_cache,
    write_report,
)
from hftransfer.training.run_log import RunLog
from hftransfer.training.scoring import predict, score, score_test_split
from hftransfer.training.sharding import fill_deepspeed_auto, sharding_kind
from hftransfer.training.state import TrainState
from hftransfer.training.trackers import PROJECT_NAME, check_trackers, flat_hparams, tracker_init_kwargs
from hftransfer.training.wise_ft import WiseFT


if TYPE_CHECKING:
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    from hftransfer.objectives import Objective
    from hftransfer.training.auto_precision import PrecisionChoice
    from hftransfer.training.loaders import EpochBatchSampler
    from hftransfer.utils.compile import CompileTimer

MODEL_DIR = ckpt.MODEL_DIR


@dataclass
class TrainResult:
    output_dir: Path
    model_dir: Path
    best_metric: float | None
    best_epoch: int | None
    history: list[dict[str, Any]]
    final_metrics: dict[str, Any]
    model: AutoTransfer | None = field(default=None, repr=False)
    test_metrics: dict[str, Any] | None = None  # the best model on data.test (held out), when given


class TransferTrainer:
    """Sets up data, model, optimizer and accelerator from a :class:`TrainConfig`, then trains and evaluates."""

    def __init__(self, config: TrainConfig | dict, callbacks: list[Callback] | None = None,
                 data: LoadedData | None = None):
        self.config = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
        self.callbacks = list(callbacks or [])
        self.data = data
        self.recipe = get_recipe(self.config.recipe)
        self.output_dir = Path(self.config.output_dir)
        # Built by setup(), in this order: pre-flight (early model), precision and accelerator, data, model,
        # objective and target domain, loaders, optimizer and schedule.
        self._early_model: AutoTransfer | None = None  # the pre-flight model, taken over by _setup_model
        self.precision_choice: PrecisionChoice | None = None  # mixed_precision=auto only
        self.mixed_precision: str | None = None
        self.accelerator: Accelerator | None = None
        self.run_log: RunLog | None = None
        self.data_report: dict[str, Any] | None = None  # main process only
        self.model: AutoTransfer | None = None  # wrapped by accelerate after setup
        self.compile_timer: CompileTimer | None = None  # model.compile only
        self.class_weights: torch.Tensor | None = None
        self.objective: Objective | None = None
        self.domain: DomainRun | None = None
        self.feature_mode = False  # linear probe on cached backbone features
        self.feature_precision: str | None = None  # feature_mode only
        self.head_warmup: dict[str, Any] | None = None  # probe_* stats of a method's head-only stage (lp_ft)
        self.train_loader: DataLoader | None = None
        self.eval_loader: DataLoader | None = None
        self.train_sampler: EpochBatchSampler | None = None
        self.depths: dict[str, int] = {}
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        self.updates_per_epoch = 0
        self.total_steps = 0
        # The last evaluation (epoch, logits, labels, loss): the end-of-run report reuses it for the best epoch.
        self._last_eval: tuple[int | None, np.ndarray, np.ndarray, float] | None = None
        self.checkpoints: RunCheckpoints | None = None
        self.wise_ft: WiseFT | None = None  # wise_ft only

    # --- setup ----------------------------------------------------------------------------------------------------

    def setup(self) -> None:
        # The pre-flight checks need no data; the config is final from here on (the backbone family's defaults).
        self.config, self._early_model = preflight(self.config, self.output_dir, self.recipe.method)
        cfg = self.config
        log_with = check_trackers(cfg.report_to) or None
        resuming = cfg.resume and not cfg.overwrite_output_dir and bool(ckpt.list_checkpoints(self.output_dir))
        self.mixed_precision, self.precision_choice = resolve_mixed_precision(
            cfg.mixed_precision, self._early_model, self.output_dir, cfg.batch_size, cfg.model.channels_last,
            cfg.model.image_size, resuming, cpu_process_group())
        self.accelerator = build_accelerator(
            self.mixed_precision, gradient_accumulation_steps=cfg.gradient_accumulation_steps, log_with=log_with,
            project_dir=str(self.output_dir / "logs"), find_unused_parameters=bool(cfg.unfreeze_schedule))
        acc = self.accelerator
        check_accelerator(acc, cfg.batch_size, cfg.objective)
        prepare_output_dir(self.output_dir, cfg.overwrite_output_dir, acc)
        self.checkpoints = RunCheckpoints(acc, self.output_dir, cfg.keep_checkpoints, self._log)
        self.wise_ft = WiseFT.for_run(cfg.wise_ft, self.output_dir, acc, self._log)
        self.run_log = RunLog(acc, self.output_dir, cfg.progress_bar)
        self.run_log.open(cfg.to_yaml())
        if self.precision_choice is not None:
            self._log(f"mixed_precision=auto -> {self.precision_choice.mixed_precision!r}: "
                      f"{self.precision_choice.reason}")
        warn_slow_bf16(cfg.mixed_precision, acc.device, self._log, acc.is_main_process)
        fill_deepspeed_auto(acc, cfg.batch_size, cfg.max_grad_norm)
        set_seed(cfg.seed)
        if self.data is None:
            with acc.main_process_first():
                self.data = load_data(cfg.data)
        self._log(f"data: {len(self.data.train)} train / {len(self.data.validation)} validation, "
                  f"{self.data.num_labels} classes ({self.data.modality})")
        check_against_data(cfg, self.data)
        self._setup_model()
        if acc.is_main_process:
            self.data_report = write_report(self.model, self.data, cfg.data, self.output_dir, self._log)
        self.class_weights = class_weight_tensor(cfg.class_weights, self.data, acc.device, self._log)
        self.domain = DomainRun.for_run(cfg, self.model, self.class_weights, acc, self._log)
        self.objective = self.domain.objective
        self._setup_loaders()
        self.domain.setup(acc, self.model, self.data)
        self.head_warmup = warm_up_head(self.model, self.data, acc, cfg, self.mixed_precision, self._log)
        self.depths = depth_map(self.model)
        self.optimizer = build_optimizer(self.model, self.model.method, self.depths, cfg.optim,
                                         fsdp=sharding_kind(acc) == "fsdp",
                                         params_join_later=bool(cfg.unfreeze_schedule))
        extra = self.objective.trainable_modules()  # a discriminator: at the head's learning rate unless it says
        add_module_groups(self.optimizer, extra, cfg.optim, {name: self.objective.module_lr(name) for name in extra})
        # split_batches=True: every process sees every global batch (a slice of it), so the count is unchanged.
        self.updates_per_epoch = max(1, math.ceil(len(self.train_loader) / cfg.gradient_accumulation_steps))
        total = self.updates_per_epoch * cfg.epochs
        self.total_steps = min(total, cfg.max_steps) if cfg.max_steps else total
        self.scheduler = build_scheduler(self.optimizer, cfg.scheduler, self.total_steps, self.updates_per_epoch)
        self.domain.plan(self.total_steps)
        self.model, self.optimizer, self.train_loader, self.eval_loader, self.scheduler = acc.prepare(
            self.model, self.optimizer, self.train_loader, self.eval_loader, self.scheduler)
        self.domain.bind(acc, self.model)
        if log_with:
            acc.init_trackers(PROJECT_NAME, config=flat_hparams(cfg.to_dict()),
                              init_kwargs=tracker_init_kwargs(log_with, self.output_dir))

    def _log(self, message: str) -> None:
        self.run_log(message)

    def _setup_model(self) -> None:
        self.model = self._early_model or load_model_with_method(self.config, self.recipe.method)
        self._early_model = None
        self.compile_timer = fit_model(self.model, self.config, self.data, self.accelerator, self._log)

    def _compile_seconds(self) -> float:
        return self.compile_timer.seconds if self.compile_timer is not None else 0.0

    def _setup_loaders(self) -> None:
        self.feature_mode, why_not = use_feature_cache(self.model, self.objective, self.config.augment)
        if why_not:
            self._log(why_not)
        loaders = train_eval_loaders(self.config, self.model, self.data, self.accelerator, self.feature_mode,
                                     self.mixed_precision, self._log)
        self.train_loader, self.eval_loader = loaders.train, loaders.validation
        self.feature_precision = loaders.feature_precision
        self.train_sampler = self.train_loader.batch_sampler

    # --- training -------------------------------------------------------------------------------------------------

    def train(self) -> TrainResult:
        if self.accelerator is None:
            self.setup()
        cfg = self.config
        state = TrainState()
        resumed = self.config.resume and self.checkpoints.resume(self.model, self.optimizer, self.scheduler, state,
                                                                 self.objective, self.domain)
        if self.wise_ft is not None:
            self.wise_ft.remember_start(self.accelerator.unwrap_model(self.model), resumed)
        for cb in self.callbacks:
            cb.on_train_begin(self)
        stop = False
        while state.epoch < cfg.epochs and not stop:
            stop = self._train_epoch(state, skip=state.batches_done if resumed else 0)
            resumed = False
        result = self._finish(state)
        for cb in self.callbacks:
            cb.on_train_end(self, result)
        return result

    def _train_epoch(self, state: TrainState, skip: int) -> bool:
        acc, cfg = self.accelerator, self.config
        epoch = state.epoch
        unwrapped = acc.unwrap_model(self.model)
        stage = stage_at(cfg.unfreeze_schedule, epoch)
        if cfg.unfreeze_schedule:
            n = apply_stage(unwrapped, unwrapped.method, self.depths, stage)
            self._log(f"epoch {epoch}: unfreeze stage {stage!r} ({n:,} trainable parameters)")
        set_train_mode(unwrapped, stage)
        self.train_sampler.use_epoch(epoch)
        loader = acc.skip_first_batches(self.train_loader, skip) if skip else self.train_loader
        if not skip:
            state.start_epoch()
        mixup = self._mixup()
        bar = tqdm(total=len(self.train_loader), initial=skip, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not (cfg.progress_bar and acc.is_local_main_process), leave=False)
        start, compiled_before = time.perf_counter(), self._compile_seconds()
        batches_done = skip
        for batch in loader:
            labels = batch.pop("labels")
            with acc.accumulate(self.model):
                targets = labels
                if mixup is not None and "pixel_values" in batch:
                    batch["pixel_values"], targets = mixup(batch["pixel_values"], labels)
                loss = self.domain.loss(self.model, batch, targets, StepInfo(state.global_step, self.total_steps))
                acc.backward(loss)
                if acc.sync_gradients and cfg.max_grad_norm:
                    acc.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], cfg.max_grad_norm)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
            batches_done += 1
            state.batches_done = batches_done
            state.loss_sum += float(loss.detach())
            state.loss_count += 1
            state.samples += int(labels.shape[0]) * acc.num_processes
            bar.update(1)
            if acc.sync_gradients:
                state.global_step += 1
                self._on_update(state, loss)
                if cfg.max_steps and state.global_step >= cfg.max_steps:
                    break
        bar.close()
        compiled = self._compile_seconds() - compiled_before  # one-off compile time is not training throughput
        state.train_time += time.perf_counter() - start - compiled
        metrics = self.evaluate(epoch=epoch + 1)
        # Every process saw a slice of each batch: average the loss over all of them.
        totals = acc.reduce(torch.tensor([state.loss_sum, float(state.loss_count)], device=acc.device),
                            reduction="sum")
        row = {"epoch": epoch + 1, "step": state.global_step,
               "train_loss": float(totals[0] / totals[1].clamp(min=1)),
               "lr": self.scheduler.get_last_lr()[-1],
               "train_samples_per_s": state.samples / max(state.train_time, 1e-9),
               "train_time_s": state.train_time, **{f"eval_{k}": v for k, v in metrics.items()}}
        if self.compile_timer is not None:
            row["compile_time_s"] = compiled  # this epoch's, like train_time_s; metrics.json has the total
        row.update(self.domain.epoch_metrics(self.predict_eval, epoch=epoch + 1))
        state.history.append(row)
        stop = self._track_best(state, row)
        state.epoch = epoch + 1
        state.batches_done = 0
        self._log(" | ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
        if cfg.report_to:
            acc.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=state.global_step)
        for cb in self.callbacks:
            cb.on_epoch_end(self, state, row)
        reached_max = bool(cfg.max_steps and state.global_step >= cfg.max_steps)
        if not (stop or reached_max or state.epoch >= cfg.epochs):
            self.checkpoints.save(self.model, self.optimizer, self.scheduler, state, self.objective, self.domain)
        return stop or reached_max

    def _on_update(self, state: TrainState, loss: torch.Tensor) -> None:
        cfg = self.config
        self.objective.after_update()
        if cfg.report_to and state.global_step % cfg.log_every_steps == 0 and self.domain.logs:
            self.accelerator.log({f"train/{k}": v for k, v in self.domain.logs.items()}, step=state.global_step)
        if cfg.report_to and state.global_step % cfg.log_every_steps == 0:
            self.accelerator.log({"train/loss": float(loss.detach()), "train/lr": self.scheduler.get_last_lr()[-1]},
                                 step=state.global_step)
        if cfg.checkpoint_every_steps and state.global_step % cfg.checkpoint_every_steps == 0:
            self.checkpoints.save(self.model, self.optimizer, self.scheduler, state, self.objective, self.domain)
        for cb in self.callbacks:
            cb.on_step_end(self, state)

    def _mixup(self) -> MixFn | None:
        cfg = self.config  # cached features are never mixed
        return None if self.feature_mode else build_mixup(cfg.mixup_alpha, cfg.cutmix_alpha, cfg.label_smoothing,
                                                          self.data.num_labels)

    def _track_best(self, state: TrainState, row: dict[str, Any]) -> bool:
        cfg = self.config
        key, greater = selection_key(cfg)
        if key not in row:
            raise KeyError(f"metric_for_best={cfg.metric_for_best!r} is not computed; available: "
                           f"{sorted(k[5:] for k in row if k.startswith('eval_'))}.")
        last = row["epoch"] >= cfg.epochs and state.best_metric is None  # never end a run without a best model
        if self.domain.within_warmup(state.global_step) and not last:
            self._log(f"epoch {row['epoch']} ended within the source warm-up (the adaptation term starts at step "
                      f"{self.domain.adaptation_start}): not a candidate for the best model")
            return False
        if state.record_selection(row[key], row["epoch"], greater):
            self.checkpoints.save_model(self.model, self.output_dir / MODEL_DIR)
        patience = cfg.early_stopping_patience
        if patience is not None and state.bad_epochs >= patience:
            self._log(f"early stopping: no {cfg.metric_for_best} improvement for {patience} epoch(s)")
            return True
        return False

    # --- evaluation -----------------------------------------------------------------------------------------------

    def predict_eval(self, loader=None) -> tuple[np.ndarray, np.ndarray, float]:
        """Logits, labels and mean loss of the validation split (or ``loader``), gathered across processes."""
        return predict(self.accelerator, self.model, self.eval_loader if loader is None else loader,
                       self.config.progress_bar)

    def evaluate(self, epoch: int | None = None) -> dict[str, float]:
        logits, labels, loss = self.predict_eval()
        # Kept so the end-of-run report needs no second pass when the best epoch is the last one evaluated.
        self._last_eval = (epoch, logits, labels, loss)
        return score(logits, labels, loss, self.data.label_names)

    # --- end of training ------------------------------------------------------------------------------------------

    def _finish(self, state: TrainState) -> TrainResult:
        acc, cfg = self.accelerator, self.config
        model_dir = self.output_dir / MODEL_DIR
        acc.wait_for_everyone()
        cached = self._last_eval
        if cached is not None and cached[0] == state.best_epoch:
            _, logits, labels, loss = cached  # the model in memory is the best one
        else:
            self.checkpoints.load_model(self.model, model_dir)
            logits, labels, loss = self.predict_eval()
        wise_ft = None if self.wise_ft is None else self.wise_ft.apply(  # on source validation, never target labels
            acc.unwrap_model(self.model), self.evaluate, cfg.metric_for_best, cfg.greater_is_better,
            save=lambda: self.checkpoints.save_model(self.model, model_dir))
        if wise_ft is not None:
            logits, labels, loss = self._last_eval[1:]  # the chosen alpha was evaluated last
        final = score(logits, labels, loss, self.data.label_names, per_class=True, confusion=True)
        test = None if self.data.test is None else score_test_split(
            acc, self.model, self.data.test, self.data.label_names, cfg, self._log)
        unwrapped = acc.unwrap_model(self.model)
        summary = run_summary(self, state, final, test, wise_ft)
        if wise_ft is not None:
            self.wise_ft.write(wise_ft, model_dir)
        publish_run(self, summary, model_dir)
        acc.end_training()
        self._close_logging()
        disable_cpu_fast_path(unwrapped)  # the returned model runs on the stock kernels, like a reloaded one
        return TrainResult(self.output_dir, model_dir, state.best_metric, state.best_epoch, state.history,
                           final, unwrapped, test_metrics=test)

    def _close_logging(self) -> None:
        if self.compile_timer is not None:
            self.compile_timer.__exit__(None, None, None)
        if self.run_log is not None:
            self.run_log.close()


def train(config: TrainConfig | dict | str | Path, overrides: list[str] | None = None,
          callbacks: list[Callback] | None = None, data: LoadedData | None = None) -> TrainResult:
    """Run a recipe: ``config`` is a :class:`TrainConfig`, a dict, or a YAML path (plus ``key=value`` overrides)."""
    if isinstance(config, (str, Path)):
        config = TrainConfig.from_yaml(config, overrides)
    elif isinstance(config, dict):
        config = TrainConfig.from_dict(apply_overrides(config, overrides or []))
    elif overrides:
        config = TrainConfig.from_dict(apply_overrides(config.to_dict(), overrides), recipe_defaults=False)
    return TransferTrainer(config, callbacks=callbacks, data=data).train()
