"""The one training loop every recipe runs, on ``accelerate``.

Covers CPU, multi-process (``accelerate launch --multi_gpu``; gloo on CPU), single/multi GPU and bf16/fp16 mixed
precision. ``batch_size`` is the *global* batch: accelerate splits each batch across processes, so one config gives
the same optimisation whatever the number of processes.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from hftransfer.augment import is_deterministic
from hftransfer.backbones.cpu_fast_path import disable_cpu_fast_path, enable_cpu_fast_path
from hftransfer.data import LoadedData, load_data
from hftransfer.errors import ConfigurationError, OutputDirError, PerformanceWarning
from hftransfer.modeling import AutoTransfer
from hftransfer.objectives import StepInfo, get_objective
from hftransfer.recipes import get_recipe
from hftransfer.saved_format import FULL_WEIGHTS, TRAINED_WEIGHTS
from hftransfer.training import checkpoint as ckpt
from hftransfer.training.callbacks import Callback
from hftransfer.training.config import TrainConfig
from hftransfer.training.feature_cache import cache_key, cached_features, feature_precision
from hftransfer.training.freezing import apply_stage, depth_map, stage_at
from hftransfer.training.loaders import ImageDataset, PadCollator, build_loader, tokenize_split
from hftransfer.training.optim import build_optimizer, build_scheduler
from hftransfer.training.sharding import (
    fill_deepspeed_auto,
    gathered_state_dict,
    load_full_state_dict,
    sharding_kind,
    shards_parameters,
)
from hftransfer.training.trackers import PROJECT_NAME, check_trackers, tracker_init_kwargs
from hftransfer.utils.hardware import fast_bf16
from hftransfer.utils.io import load_state_dict, write_json


logger = logging.getLogger("hftransfer")
MODEL_DIR = "model"


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
        self.feature_mode = False

    # --- setup ----------------------------------------------------------------------------------------------------

    def setup(self) -> None:
        from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs
        from accelerate.utils import set_seed

        cfg = self.config
        self._preflight()
        ddp = DistributedDataParallelKwargs(find_unused_parameters=bool(cfg.unfreeze_schedule))
        log_with = check_trackers(cfg.report_to) or None
        _reset_accelerate_state()
        # accelerate only forms a gloo process group on CPU-only machines when told to use the CPU.
        cpu_only = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
        self.mixed_precision = self._resolve_mixed_precision(cpu_only)
        self.accelerator = Accelerator(
            cpu=cpu_only, mixed_precision=self.mixed_precision,
            gradient_accumulation_steps=cfg.gradient_accumulation_steps,
            dataloader_config=DataLoaderConfiguration(split_batches=True), log_with=log_with,
            project_dir=str(self.output_dir / "logs"), kwargs_handlers=[ddp],
        )
        acc = self.accelerator
        self._check_fp16_scaler()
        if cfg.batch_size % acc.num_processes:
            raise ConfigurationError(f"batch_size={cfg.batch_size} is the global batch and must divide evenly "
                                     f"across {acc.num_processes} processes; use a multiple of {acc.num_processes}.")
        self._check_output_dir()
        self._setup_logging()
        if self.precision_choice is not None:
            self._log(f"mixed_precision=auto -> {self.precision_choice.mixed_precision!r}: "
                      f"{self.precision_choice.reason}")
        self._warn_slow_bf16()
        fill_deepspeed_auto(acc, cfg.batch_size, cfg.max_grad_norm)
        set_seed(cfg.seed)
        if self.data is None:
            with acc.main_process_first():
                self.data = load_data(cfg.data)
        self._log(f"data: {len(self.data.train)} train / {len(self.data.validation)} validation, "
                  f"{self.data.num_labels} classes ({self.data.modality})")
        cfg = self._apply_family_defaults()
        self._check_against_data()
        self._setup_model()
        self._write_data_report()
        self.class_weights = self._class_weights()
        self._setup_objective()
        self._setup_loaders()
        self._setup_target()
        self.depths = depth_map(self.model)
        self.optimizer = build_optimizer(self.model, self.model.method, self.depths, cfg.optim,
                                         fsdp=sharding_kind(acc) == "fsdp")
        self._add_objective_params()
        # split_batches=True: every process sees every global batch (a slice of it), so the count is unchanged.
        self.updates_per_epoch = max(1, math.ceil(len(self.train_loader) / cfg.gradient_accumulation_steps))
        total = self.updates_per_epoch * cfg.epochs
        self.total_steps = min(total, cfg.max_steps) if cfg.max_steps else total
        self.scheduler = build_scheduler(self.optimizer, cfg.scheduler, self.total_steps, self.updates_per_epoch)
        self.model, self.optimizer, self.train_loader, self.eval_loader, self.scheduler = acc.prepare(
            self.model, self.optimizer, self.train_loader, self.eval_loader, self.scheduler)
        self._bind_objective()
        if log_with:
            acc.init_trackers(PROJECT_NAME, config=_flat_hparams(cfg),
                              init_kwargs=tracker_init_kwargs(log_with, self.output_dir))

    def _preflight(self) -> None:
        """Checks that need no data, run before the data set is read (which can take minutes).

        Config values and method options were checked when the config was built (``TrainConfig.__post_init__``);
        here: ``output_dir`` is a folder (or can become one) and the backbone name resolves and is available.
        """
        from hftransfer.backbones import check_backbone_name

        cfg, out = self.config, self.output_dir
        blocker = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise OutputDirError(
                f"output_dir={str(out)!r} cannot be a folder: {str(blocker)!r} is a file. Choose another output_dir "
                "or move the file."
            )
        check_backbone_name(cfg.model.name, revision=cfg.model.revision, pretrained=cfg.model.pretrained)
        self._early_model = self._load_model_with_method()
        if cfg.push_to_hub:
            from hftransfer.hub.push import check_push_target

            check_push_target(cfg.hub_repo_id, cfg.hub_revision)

    def _check_against_data(self) -> None:
        """Checks that need the loaded data but no model: the best-model metric is computed for this label count."""
        from hftransfer.metrics import classification_metric_names

        cfg, data = self.config, self.data
        names = ["loss", *classification_metric_names(data.num_labels)]
        if cfg.metric_for_best not in names:
            raise ConfigurationError(
                f"metric_for_best={cfg.metric_for_best!r} is not computed for {data.num_labels} classes "
                f"(top-k accuracy needs more than k classes); use one of {names}."
            )
        if isinstance(cfg.class_weights, (list, tuple)) and len(cfg.class_weights) != data.num_labels:
            raise ConfigurationError(
                f"class_weights has {len(cfg.class_weights)} weights but the data has {data.num_labels} classes "
                f"{data.label_names[:20]}; give one weight per class in that order, or class_weights=auto."
            )

    def _check_fp16_scaler(self) -> None:
        """fp16 trains with autocast and a gradient scaler; accelerate gives neither on a CPU, where the run would
        silently train in fp32 while its metrics say fp16. DeepSpeed scales the loss itself."""
        from accelerate.utils import DistributedType

        acc = self.accelerator
        if acc.mixed_precision == "fp16" and acc.scaler is None and acc.distributed_type != DistributedType.DEEPSPEED:
            raise ConfigurationError(
                f"mixed_precision='fp16' needs a GPU: on {acc.device.type!r} accelerate runs no fp16 autocast or "
                "gradient scaler (the run would train in fp32). Use mixed_precision=bf16 (or no) on CPU."
            )

    def _warn_slow_bf16(self) -> None:
        """An explicit ``mixed_precision: bf16`` where bf16 is emulated (a CPU without AMX / AVX512-BF16) trains
        several times slower than fp32 (8.8x measured on an AVX2 EPYC): say so before training, with the fix."""
        device = self.accelerator.device
        if self.config.mixed_precision != "bf16" or fast_bf16(device):
            return
        message = (f"mixed_precision=bf16 on this {device.type}, which has no native bf16 (no AMX / AVX512-BF16 "
                   "or bf16 GPU): bf16 is emulated and typically several times slower than fp32 here. Use "
                   "mixed_precision=auto (picks the faster one) or mixed_precision=no.")
        self._log(message)
        if self.accelerator.is_main_process:
            warnings.warn(message, PerformanceWarning, stacklevel=2)

    def _check_output_dir(self) -> None:
        cfg, out = self.config, self.output_dir
        if (out / "metrics.json").is_file() and not cfg.overwrite_output_dir:
            raise OutputDirError(
                f"output_dir={str(out)!r} already holds a finished run (metrics.json). Set overwrite_output_dir=true "
                "or choose another output_dir."
            )
        if cfg.overwrite_output_dir and self.accelerator.is_main_process and out.exists():
            for child in (out / ckpt.CHECKPOINT_DIR, out / MODEL_DIR, out / "metrics.json"):
                shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)
        self.accelerator.wait_for_everyone()

    def _setup_logging(self) -> None:
        if self.accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(self.output_dir / "train.log")
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            self._log_handler = handler
            (self.output_dir / "config.yaml").write_text(self.config.to_yaml(), encoding="utf-8")

    def _apply_family_defaults(self) -> TrainConfig:
        """Fill in the recipe's defaults for this backbone family (the data's modality; the user's values win)."""
        config = self.config.for_modality(self.data.modality)
        if config is not self.config:
            self.config = config
            if self.accelerator.is_main_process:
                (self.output_dir / "config.yaml").write_text(config.to_yaml(), encoding="utf-8")
        return self.config

    def _log(self, message: str) -> None:
        if self.accelerator.is_main_process:
            logger.info(message)
            if self.config.progress_bar:
                self.accelerator.print(message)

    def _load_model_with_method(self) -> AutoTransfer:
        """The backbone with the recipe's method applied, before any data is read: a method the backbone cannot take
        (``check_backbone``) fails here. The head is a placeholder until the data's labels are known."""
        from accelerate.utils import set_seed

        cfg = self.config
        set_seed(cfg.seed)  # adapter / prompt initialisation is part of the run's seeded randomness
        model = AutoTransfer.from_pretrained(
            cfg.model.name, num_labels=2, revision=cfg.model.revision, pretrained=cfg.model.pretrained,
            pooling=cfg.model.pooling, max_length=cfg.model.max_length, head_dropout=cfg.model.head_dropout,
            trust_remote_code=cfg.model.trust_remote_code, **cfg.model.config_overrides,
        )
        # The method's options may depend on the backbone family (recipe family_defaults): the model tells which.
        method_options = cfg.for_modality(model.modality).method
        model.apply_method(self.recipe.method, method_options)
        return model

    def _setup_model(self) -> None:
        cfg, data = self.config, self.data
        self.model = getattr(self, "_early_model", None) or self._load_model_with_method()
        self._early_model = None
        self.model.reset_head(data.id2label, cfg.model.head_dropout)
        self.model.method.set_trainable(self.model)
        if self.model.modality != data.modality:
            raise ConfigurationError(f"model.name={cfg.model.name!r} is a {self.model.modality} backbone but the "
                                     f"data ({cfg.data.source!r}) is {data.modality}. Pick a matching backbone or "
                                     "dataset.")
        if cfg.model.image_size and self.model.modality == "image":
            self.model.backbone.preprocessor = self.model.preprocessor.with_image_size(cfg.model.image_size)
        if cfg.model.gradient_checkpointing:
            self.model.backbone.set_grad_checkpointing(True)
        if cfg.model.channels_last and self.model.modality == "image" and not self._channels_last_blocked_by_fsdp():
            self.model.to(memory_format=torch.channels_last)
        if cfg.model.cpu_fast_path and self.accelerator.device.type == "cpu":
            for change in enable_cpu_fast_path(self.model):
                self._log(f"model.cpu_fast_path: {change}")
        if cfg.model.compile:
            self._compile_model()
        self._log(self.model.trainable_parameters_line())

    def _resolve_mixed_precision(self, cpu_only: bool) -> str | None:
        """``mixed_precision: auto`` -> ``"no"`` or ``"bf16"`` (see ``auto_precision``), the main process's choice on
        every process; other values pass through to accelerate."""
        self.precision_choice = None
        if self.config.mixed_precision != "auto":
            return self.config.mixed_precision
        from accelerate import PartialState
        from accelerate.utils import broadcast_object_list

        from hftransfer.training.auto_precision import CHOICE_FILE, PrecisionChoice, choose_precision
        from hftransfer.utils.io import read_json, write_json

        cfg, stored = self.config, self.output_dir / CHOICE_FILE
        state = PartialState(cpu=cpu_only)
        if cfg.resume and not cfg.overwrite_output_dir and stored.is_file() and ckpt.list_checkpoints(self.output_dir):
            choice = PrecisionChoice.from_dict(read_json(stored))  # resume in the precision the run started with
            choice.reason = f"kept from the run being resumed ({choice.reason})"
        else:
            choice = choose_precision(self._early_model, state.device, cfg.batch_size, cfg.model.channels_last,
                                      image_size=cfg.model.image_size)
            if state.num_processes > 1:
                choice = broadcast_object_list([choice])[0]
            if state.is_main_process:
                self.output_dir.mkdir(parents=True, exist_ok=True)
                write_json(stored, choice.to_dict())
        self.precision_choice = choice  # logged once the log file exists
        return choice.mixed_precision

    def _compile_model(self) -> None:
        """``model.compile``: compile in place (names unchanged) and time compilation apart from training."""
        from hftransfer.utils.compile import CompileTimer, compile_in_place

        outcome = compile_in_place(self.model, self.accelerator.device)
        if not outcome.compiled:
            self._log(f"model.compile=true cannot apply: {outcome.note}. Training continues without compiling.")
            return
        if outcome.note:
            self._log(f"model.compile: {outcome.note}")
        self.compile_timer = CompileTimer().__enter__()
        built_by = f", C++ compiler {outcome.cpp_compiler!r}" if outcome.cpp_compiler else ""
        self._log(f"torch.compile: on (inductor{built_by}); the first steps compile, and that time is reported as "
                  "compile_time_s, apart from train_samples_per_s")

    def _compile_seconds(self) -> float:
        timer = getattr(self, "compile_timer", None)
        return timer.seconds if timer is not None else 0.0

    def _setup_loaders(self) -> None:
        cfg, model, data = self.config, self.model, self.data
        eval_bs = cfg.eval_batch_size or cfg.batch_size
        method = model.method
        if self.objective.needs_target and getattr(method.config, "cache_features", False):
            self._log(f"feature cache off: objective {self.objective.name!r} trains on target batches")
        elif not method.trains_backbone and getattr(method.config, "cache_features", False):
            if model.modality == "image" and not is_deterministic(cfg.augment):
                self._log(f"feature cache off: augment={cfg.augment!r} is random, so the backbone runs every epoch "
                          "(set augment: none to cache features)")
            else:
                self.feature_mode = True
        if model.modality == "image":
            train_tf = model.transform(train=not self.feature_mode, augment=cfg.augment)
            eval_tf = model.transform(train=False)
            train_ds = ImageDataset(data.train, train_tf, seed=cfg.seed, cache_mb=cfg.image_cache_mb)
            eval_ds = ImageDataset(data.validation, eval_tf, seed=cfg.seed, cache_mb=cfg.image_cache_mb)
            train_len = eval_len = None
            collate = None
        else:
            tok = model.preprocessor.tokenizer
            train_ds = tokenize_split(data.train, tok, model.preprocessor.max_length)
            eval_ds = tokenize_split(data.validation, tok, model.preprocessor.max_length)
            train_len = [len(x) for x in train_ds.columns["input_ids"]] if cfg.bucket_by_length else None
            eval_len = [len(x) for x in eval_ds.columns["input_ids"]]
            collate = PadCollator(tok.pad_token_id or 0)
        if self.feature_mode:
            train_ds, eval_ds = self._cache_features(train_ds, eval_ds, eval_bs, collate, train_len, eval_len)
            train_len = eval_len = None
            collate = None
        self.train_loader = build_loader(train_ds, cfg.batch_size, shuffle=True, seed=cfg.seed,
                                         num_workers=cfg.num_workers, lengths=train_len, collate_fn=collate,
                                         sample_weights=self._sample_weights())
        self.eval_loader = build_loader(eval_ds, eval_bs, shuffle=False, seed=cfg.seed,
                                        num_workers=cfg.num_workers, lengths=eval_len, collate_fn=collate)
        self.train_sampler = self.train_loader.batch_sampler

    def _write_data_report(self) -> None:
        """data_report.json/.md in output_dir and a summary in the log (main process; others skip the work)."""
        if not self.accelerator.is_main_process:
            self.data_report = None
            return
        from hftransfer.data.report import build_data_report, data_report_lines, write_data_report

        count_tokens = max_length = None
        if self.model.modality == "text":
            tok, max_length = self.model.preprocessor.tokenizer, self.model.preprocessor.max_length

            def count_tokens(texts: list[str]) -> list[int]:  # verbose=False: no "longer than the maximum" warning
                return [len(ids) for ids in tok(texts, truncation=False, padding=False, verbose=False)["input_ids"]]

        self.data_report = build_data_report(self.data, self.config.data, max_length, count_tokens)
        write_data_report(self.data_report, self.output_dir)
        for line in data_report_lines(self.data_report):
            self._log(line)

    def _train_labels(self) -> np.ndarray:
        return np.asarray(self.data.train.with_format("arrow")["label"], dtype=np.int64)

    def _class_weights(self) -> torch.Tensor | None:
        """``class_weights``: 'auto' -> inverse train frequency (mean 1), a list -> as given; None -> unweighted."""
        from hftransfer.training.loaders import inverse_frequency_weights

        value = self.config.class_weights
        if value is None:
            return None
        if value == "auto":
            weights = inverse_frequency_weights(self._train_labels(), self.data.num_labels)
        else:  # one per class: checked in _check_against_data
            weights = np.asarray(value, dtype=np.float64)
        self._log("class weights: " + ", ".join(f"{n}={w:.3g}" for n, w in zip(self.data.label_names, weights)))
        return torch.tensor(weights, dtype=torch.float32, device=self.accelerator.device)

    def _weight_share(self, targets: torch.Tensor) -> torch.Tensor | float:
        """Rescales a process's class-weighted mean loss so the processes' average is the global batch's weighted mean.

        With class weights, cross-entropy divides by the slice's weight sum; slices with different sums would weigh
        their rows unequally. Factor: local weight sum * processes / global weight sum (1 without weights, on one
        process, or for soft mixup targets, whose mean is over rows).
        """
        acc = self.accelerator
        if self.class_weights is None or acc.num_processes == 1 or targets.dim() != 1:
            return 1.0
        local = self.class_weights[targets].sum()
        total = acc.reduce(local.detach().clone(), reduction="sum")
        return local.detach() * acc.num_processes / total.clamp(min=1e-12)

    def _sample_weights(self) -> np.ndarray | None:
        """Per-row draw weights of ``sampler: balanced`` (None: every row once per epoch)."""
        from hftransfer.training.loaders import balanced_sample_weights

        if self.config.sampler != "balanced":
            return None
        return balanced_sample_weights(self._train_labels(), self.data.num_labels)

    def _cache_features(self, train_ds, eval_ds, eval_bs, collate, train_len, eval_len):
        acc, cfg = self.accelerator, self.config
        model = self.model.to(acc.device)
        cache_dir = getattr(self.model.method.config, "cache_dir", None)
        self.feature_precision = feature_precision(getattr(self.model.method.config, "feature_precision", "auto"),
                                                   self.mixed_precision, acc.device)
        self._log(f"feature extraction in {self.feature_precision}")
        out = []
        for name, ds, lengths, split in (("train", train_ds, train_len, self.data.train),
                                         ("validation", eval_ds, eval_len, self.data.validation)):
            loader = acc.prepare_data_loader(build_loader(ds, eval_bs, shuffle=False, seed=cfg.seed,
                                                          num_workers=cfg.num_workers, lengths=lengths,
                                                          collate_fn=collate))
            key = cache_key(self.model, getattr(split, "_fingerprint", str(len(split))),
                            {"split": name, "precision": self.feature_precision})
            start = time.perf_counter()
            out.append(cached_features(acc, model, loader, key, cache_dir, f"features ({name})", cfg.progress_bar,
                                       precision=self.feature_precision))
            self._log(f"cached {name} features {tuple(out[-1].features.shape)} in {time.perf_counter() - start:.1f}s")
        return out

    # --- training -------------------------------------------------------------------------------------------------

    def train(self) -> TrainResult:
        if not hasattr(self, "accelerator"):
            self.setup()
        cfg = self.config
        state = {"epoch": 0, "batches_done": 0, "global_step": 0, "history": [], "best_metric": None,
                 "best_epoch": None, "bad_epochs": 0, "loss_sum": 0.0, "loss_count": 0, "samples": 0,
                 "train_time": 0.0}
        resumed = self._maybe_resume(state)
        for cb in self.callbacks:
            cb.on_train_begin(self)
        stop = False
        while state["epoch"] < cfg.epochs and not stop:
            stop = self._train_epoch(state, skip=state["batches_done"] if resumed else 0)
            resumed = False
        result = self._finish(state)
        for cb in self.callbacks:
            cb.on_train_end(self, result)
        return result

    def _maybe_resume(self, state: dict[str, Any]) -> bool:
        found = ckpt.list_checkpoints(self.output_dir) if self.config.resume else []
        if not found:
            return False
        unwrapped = self.accelerator.unwrap_model(self.model)
        loaded = ckpt.load_checkpoint(found[-1], unwrapped, self.optimizer.optimizer, self.scheduler.scheduler)
        state.update(loaded)
        self._resume_objective(found[-1], state)
        self._log(f"resumed from {found[-1]} (epoch {state['epoch']}, step {state['global_step']}, "
                  f"{state['batches_done']} batches into the epoch)")
        return True

    def _set_train_mode(self, stage: str) -> None:
        model = self.accelerator.unwrap_model(self.model)
        model.train()
        # Frozen BatchNorm layers keep their pretrained statistics (and frozen dropout-free backbones stay exact).
        for module in model.backbone.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
                    p.requires_grad for p in module.parameters(recurse=False)):
                module.eval()
        if not model.method.trains_backbone or stage == "head" or model.method.keeps_backbone_eval:
            model.backbone.eval()
            for module in model.method.trained_modules(model):
                module.train()

    def _train_epoch(self, state: dict[str, Any], skip: int) -> bool:
        acc, cfg = self.accelerator, self.config
        epoch = state["epoch"]
        unwrapped = acc.unwrap_model(self.model)
        stage = stage_at(cfg.unfreeze_schedule, epoch)
        if cfg.unfreeze_schedule:
            n = apply_stage(unwrapped, unwrapped.method, self.depths, stage)
            self._log(f"epoch {epoch}: unfreeze stage {stage!r} ({n:,} trainable parameters)")
        self._set_train_mode(stage)
        self.train_sampler.use_epoch(epoch)
        loader = acc.skip_first_batches(self.train_loader, skip) if skip else self.train_loader
        if not skip:
            state.update(loss_sum=0.0, loss_count=0, samples=0, train_time=0.0)
        mixup = self._mixup()
        from tqdm.auto import tqdm

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
                loss = self._objective_loss(batch, targets, state)
                acc.backward(loss)
                if acc.sync_gradients and cfg.max_grad_norm:
                    acc.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], cfg.max_grad_norm)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
            batches_done += 1
            state["batches_done"] = batches_done
            state["loss_sum"] += float(loss.detach())
            state["loss_count"] += 1
            state["samples"] += int(labels.shape[0]) * acc.num_processes
            bar.update(1)
            if acc.sync_gradients:
                state["global_step"] += 1
                self._on_update(state, loss)
                if cfg.max_steps and state["global_step"] >= cfg.max_steps:
                    break
        bar.close()
        compiled = self._compile_seconds() - compiled_before  # one-off compile time is not training throughput
        state["train_time"] += time.perf_counter() - start - compiled
        metrics = self.evaluate(epoch=epoch + 1)
        # Every process saw a slice of each batch: average the loss over all of them.
        totals = acc.reduce(torch.tensor([state["loss_sum"], float(state["loss_count"])], device=acc.device),
                            reduction="sum")
        row = {"epoch": epoch + 1, "step": state["global_step"],
               "train_loss": float(totals[0] / totals[1].clamp(min=1)),
               "lr": self.scheduler.get_last_lr()[-1],
               "train_samples_per_s": state["samples"] / max(state["train_time"], 1e-9),
               "train_time_s": state["train_time"], **{f"eval_{k}": v for k, v in metrics.items()}}
        if getattr(self, "compile_timer", None) is not None:
            row["compile_time_s"] = compiled  # this epoch's, like train_time_s; metrics.json has the total
        row.update(self._target_metrics())
        state["history"].append(row)
        stop = self._track_best(state, row)
        state["epoch"] = epoch + 1
        state["batches_done"] = 0
        self._log(" | ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
        if cfg.report_to:
            acc.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=state["global_step"])
        for cb in self.callbacks:
            cb.on_epoch_end(self, state, row)
        reached_max = bool(cfg.max_steps and state["global_step"] >= cfg.max_steps)
        if not (stop or reached_max or state["epoch"] >= cfg.epochs):
            self._checkpoint(state)
        return stop or reached_max

    def _on_update(self, state: dict[str, Any], loss: torch.Tensor) -> None:
        cfg = self.config
        self.objective.after_update()
        if cfg.report_to and state["global_step"] % cfg.log_every_steps == 0 and self.objective_logs:
            self.accelerator.log({f"train/{k}": v for k, v in self.objective_logs.items()}, step=state["global_step"])
        if cfg.report_to and state["global_step"] % cfg.log_every_steps == 0:
            self.accelerator.log({"train/loss": float(loss.detach()), "train/lr": self.scheduler.get_last_lr()[-1]},
                                 step=state["global_step"])
        if cfg.checkpoint_every_steps and state["global_step"] % cfg.checkpoint_every_steps == 0:
            self._checkpoint(state)
        for cb in self.callbacks:
            cb.on_step_end(self, state)

    def _checkpoint(self, state: dict[str, Any]) -> None:
        acc = self.accelerator
        if self._sharded_checkpoint_skipped():
            return
        acc.wait_for_everyone()
        if acc.is_main_process:
            if self.target_stream is not None:
                state["target_stream"] = self.target_stream.state_dict()
            ckpt.save_checkpoint(self.output_dir, acc.unwrap_model(self.model), self.optimizer.optimizer,
                                 self.scheduler.scheduler, dict(state), self.config.keep_checkpoints,
                                 objective_state=self.objective.state_dict())
        acc.wait_for_everyone()

    def _mixup(self):
        cfg = self.config
        if self.feature_mode or (cfg.mixup_alpha <= 0 and cfg.cutmix_alpha <= 0):
            return None
        from timm.data import Mixup

        mix = Mixup(mixup_alpha=cfg.mixup_alpha, cutmix_alpha=cfg.cutmix_alpha, label_smoothing=cfg.label_smoothing,
                    num_classes=self.data.num_labels)

        def apply(x, y):
            if x.shape[0] % 2:  # timm's Mixup pairs samples: odd batches (the last one) pass through
                return x, F.one_hot(y, self.data.num_labels).float()
            return mix(x, y)

        return apply

    def _track_best(self, state: dict[str, Any], row: dict[str, Any]) -> bool:
        cfg = self.config
        key, greater = self._selection_key()
        if key not in row:
            raise KeyError(f"metric_for_best={cfg.metric_for_best!r} is not computed; available: "
                           f"{sorted(k[5:] for k in row if k.startswith('eval_'))}.")
        value = row[key]
        best = state["best_metric"]
        improved = best is None or (value > best if greater else value < best)
        if improved:
            state.update(best_metric=value, best_epoch=row["epoch"], bad_epochs=0)
            self._save_model(self.output_dir / MODEL_DIR)
        else:
            state["bad_epochs"] += 1
        patience = cfg.early_stopping_patience
        if patience is not None and state["bad_epochs"] >= patience:
            self._log(f"early stopping: no {cfg.metric_for_best} improvement for {patience} epoch(s)")
            return True
        return False

    def _save_model(self, path: Path) -> None:
        acc = self.accelerator
        acc.wait_for_everyone()
        # Sharded weights (FSDP, ZeRO-3) are gathered first, so LoRA & co. still save only their trained parameters.
        acc.unwrap_model(self.model).save_pretrained(path, is_main_process=acc.is_main_process,
                                                     state_dict=gathered_state_dict(acc, self.model))
        acc.wait_for_everyone()

    # --- objective and target domain (hftransfer.objectives, hftransfer.training.domain) --------------------------

    def _setup_objective(self) -> None:
        """Build the run's objective; it may reshape the model (a bottleneck in the head) before the optimizer."""
        self.objective = get_objective(self.config.objective)
        self.objective_logs: dict[str, float] = {}  # the last micro-batch's loss parts (to trackers with report_to)
        self.objective.label_smoothing = self.config.label_smoothing
        # class_weights (auto or given) weigh the supervised part; the share keeps N processes equal to one.
        self.objective.class_weight = self.class_weights
        self.objective.weight_share = self._weight_share
        self.objective.check_model(self.model)
        self.objective.prepare_model(self.model)
        if self.objective.needs_target:
            self._log(f"objective: {self.objective.to_dict()}")

    def _setup_target(self) -> None:
        """Target data: the endless unlabelled stream (when the objective reads it), an eval-view loader of it (for
        entropy-based selection) and the labelled ``target_eval`` loader."""
        from hftransfer.training.domain import (
            TARGET_SEED_OFFSET,
            TargetStream,
            TwoViewImageDataset,
            load_target,
            read_baseline,
        )

        self.target_stream = self.target_loader = self.target_eval_loader = None
        cfg, acc, model = self.config, self.accelerator, self.model
        self.baseline = read_baseline(cfg.source_only_baseline) if cfg.source_only_baseline else None
        if cfg.target is None and cfg.target_eval is None:
            return
        with acc.main_process_first():
            target = load_target(cfg.target, self.data, "target", labelled=False) if cfg.target else None
            target_eval = (load_target(cfg.target_eval, self.data, "target_eval", labelled=True)
                           if cfg.target_eval else None)
        self.target_sizes = {"target": len(target) if target is not None else 0,
                             "target_eval": len(target_eval) if target_eval is not None else 0}
        self._log(f"target data: {self.target_sizes['target']} unlabelled rows, {self.target_sizes['target_eval']} "
                  "labelled evaluation rows (never used for model selection unless model_selection=target_eval)")
        if target is not None and self.objective.needs_target:
            seed = cfg.seed + TARGET_SEED_OFFSET
            collate = None
            if model.modality == "image":
                strong = getattr(self.objective.config, "strong_augment", None)
                dataset = TwoViewImageDataset(
                    target, model.transform(train=True, augment=cfg.augment),
                    model.transform(train=True, augment=strong) if "strong" in self.objective.target_views else None,
                    seed=seed, cache_mb=cfg.image_cache_mb)
            else:
                tok = model.preprocessor.tokenizer
                dataset = tokenize_split(target, tok, model.preprocessor.max_length)
                collate = PadCollator(tok.pad_token_id or 0)
            self.target_stream = TargetStream(dataset, cfg.batch_size, seed, acc.device, acc.num_processes,
                                              acc.process_index, cfg.num_workers, collate)
        if target is not None and cfg.model_selection == "target_entropy":
            self.target_loader = self._eval_loader_for(target)
        if target_eval is not None:
            self.target_eval_loader = self._eval_loader_for(target_eval)

    def _eval_loader_for(self, split):
        cfg, model = self.config, self.model
        lengths = collate = None
        if model.modality == "image":
            dataset = ImageDataset(split, model.transform(train=False), seed=cfg.seed, cache_mb=cfg.image_cache_mb)
        else:
            tok = model.preprocessor.tokenizer
            dataset = tokenize_split(split, tok, model.preprocessor.max_length)
            lengths = [len(x) for x in dataset.columns["input_ids"]]
            collate = PadCollator(tok.pad_token_id or 0)
        loader = build_loader(dataset, cfg.eval_batch_size or cfg.batch_size, shuffle=False, seed=cfg.seed,
                              num_workers=cfg.num_workers, lengths=lengths, collate_fn=collate)
        return self.accelerator.prepare_data_loader(loader)

    def _add_objective_params(self) -> None:
        """The objective's extra modules (a discriminator) join the optimizer at the head's learning rate."""
        optim = self.config.optim
        for name, module in self.objective.trainable_modules().items():
            lr = self.objective.module_lr(name) or (optim.head_lr if optim.head_lr is not None else optim.lr)
            params = [p for p in module.parameters() if p.requires_grad]
            for decay, group in ((optim.weight_decay, [p for p in params if p.ndim >= 2]),
                                 (0.0, [p for p in params if p.ndim < 2])):
                if group:
                    self.optimizer.add_param_group({"params": group, "lr": lr, "weight_decay": decay,
                                                    "param_names": [f"objective.{name}"] * len(group)})

    def _bind_objective(self) -> None:
        acc = self.accelerator
        modules = {name: acc.prepare_model(module) for name, module in self.objective.trainable_modules().items()}
        self.objective.bind(modules, acc.unwrap_model(self.model), acc.device)

    def _objective_loss(self, batch: dict[str, torch.Tensor], targets: torch.Tensor,
                        state: dict[str, Any]) -> torch.Tensor:
        target = next(self.target_stream) if self.target_stream is not None else None
        out = self.objective.compute_loss(self.model, batch, targets, target,
                                          StepInfo(state["global_step"], self.total_steps))
        self.objective_logs = out.logs
        return out.loss

    def _resume_objective(self, checkpoint: Path, state: dict[str, Any]) -> None:
        objective_state = ckpt.load_objective_state(checkpoint)
        if objective_state:
            self.objective.load_state_dict({k: v.to(self.accelerator.device) for k, v in objective_state.items()})
        if self.target_stream is not None and "target_stream" in state:
            self.target_stream.load_state_dict(state["target_stream"])

    def _selection_key(self) -> tuple[str, bool]:
        """The history key that picks the best checkpoint and whether higher is better."""
        cfg = self.config
        if cfg.model_selection == "target_entropy":
            return "target_entropy", False
        if cfg.model_selection == "target_eval":
            return f"target_eval_{cfg.metric_for_best}", cfg.greater_is_better
        return f"eval_{cfg.metric_for_best}", cfg.greater_is_better

    def _target_metrics(self) -> dict[str, float]:
        """Per-epoch target numbers for the history: labelled target metrics and the target prediction entropy."""
        from hftransfer.metrics import compute_classification_metrics
        from hftransfer.training.domain import prediction_entropy

        row: dict[str, float] = {}
        if self.target_loader is not None:
            logits, _, _ = self.predict_eval(self.target_loader)
            row["target_entropy"] = prediction_entropy(logits)
        if self.target_eval_loader is not None:
            logits, labels, loss = self.predict_eval(self.target_eval_loader)
            metrics = compute_classification_metrics(logits, labels, self.data.label_names)
            row.update({f"target_eval_{k}": v for k, v in {"loss": loss, **metrics}.items()})
        return row

    def _domain_summary(self, state: dict[str, Any]) -> dict[str, Any]:
        """What metrics.json says about the objective and the target domain (the best model is in memory)."""
        from hftransfer.metrics import classification_report, compute_classification_metrics
        from hftransfer.training.domain import prediction_entropy

        cfg = self.config
        key, _ = self._selection_key()
        out: dict[str, Any] = {"objective": self.objective.to_dict(), "model_selection": cfg.model_selection,
                               "selected_on": key,
                               "selection_uses_target_labels": cfg.model_selection == "target_eval"}
        if self.baseline is not None:
            out["source_only_baseline"] = self.baseline
        if cfg.target is None and cfg.target_eval is None:
            return out
        out["target_data"] = dict(self.target_sizes)
        if self.target_loader is not None:
            logits, _, _ = self.predict_eval(self.target_loader)
            out["target_entropy"] = prediction_entropy(logits)
        if self.target_eval_loader is not None:
            logits, labels, loss = self.predict_eval(self.target_eval_loader)
            out["target_eval"] = {
                "loss": loss, **compute_classification_metrics(logits, labels, self.data.label_names),
                "per_class": classification_report(logits.argmax(-1), labels, self.data.label_names),
                "note": "labelled target data: reported only" + (
                    "" if cfg.model_selection != "target_eval" else "; ALSO USED FOR MODEL SELECTION (opt-in)"),
            }
        return out

    # --- evaluation -----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def predict_eval(self, loader=None) -> tuple[np.ndarray, np.ndarray, float]:
        """Logits and labels of the whole validation split (or ``loader``'s, gathered across processes) and its mean
        loss (NaN for unlabelled data)."""
        from tqdm.auto import tqdm

        acc = self.accelerator
        self.model.eval()
        logits_all, labels_all = [], []
        for batch in tqdm(self.eval_loader if loader is None else loader, desc="eval", leave=False,
                          disable=not (self.config.progress_bar and acc.is_local_main_process)):
            labels = batch.pop("labels")
            logits = self.model(**batch).logits.float()
            logits, labels = acc.gather_for_metrics((logits.contiguous(), labels))
            logits_all.append(logits.cpu())
            labels_all.append(labels.cpu())
        logits, labels = torch.cat(logits_all), torch.cat(labels_all)
        loss = float(F.cross_entropy(logits, labels)) if bool((labels >= 0).all()) else float("nan")
        return logits.numpy(), labels.numpy(), loss

    def evaluate(self, epoch: int | None = None) -> dict[str, float]:
        from hftransfer.metrics import compute_classification_metrics

        logits, labels, loss = self.predict_eval()
        # Kept so the end-of-run report needs no second pass when the best epoch is the last one evaluated.
        self._last_eval = (epoch, logits, labels, loss)
        metrics = compute_classification_metrics(logits, labels, self.data.label_names)
        return {"loss": loss, **metrics}

    # --- end of training ------------------------------------------------------------------------------------------

    def _finish(self, state: dict[str, Any]) -> TrainResult:
        from hftransfer.metrics import classification_report, compute_classification_metrics, confusion_matrix

        acc, cfg = self.accelerator, self.config
        model_dir = self.output_dir / MODEL_DIR
        acc.wait_for_everyone()
        cached = getattr(self, "_last_eval", None)
        if cached is not None and cached[0] == state["best_epoch"]:
            _, logits, labels, loss = cached  # the model in memory is the best one
        else:
            self._load_best(model_dir)
            logits, labels, loss = self.predict_eval()
        preds = logits.argmax(-1)
        final = {"loss": loss, **compute_classification_metrics(logits, labels, self.data.label_names),
                 "per_class": classification_report(preds, labels, self.data.label_names),
                 "confusion_matrix": confusion_matrix(preds, labels, self.data.num_labels)}
        test = self._evaluate_test()
        unwrapped = acc.unwrap_model(self.model)
        summary = {
            "recipe": cfg.recipe, "model": cfg.model.name, "best_epoch": state["best_epoch"],
            "metric_for_best": cfg.metric_for_best, "best_metric": state["best_metric"],
            "history": state["history"], "final_eval": final, "parameters": unwrapped.trainable_summary(),
            "data": dataclasses.asdict(self.data.report) if dataclasses.is_dataclass(self.data.report) else {},
            "num_processes": acc.num_processes, "mixed_precision": self.mixed_precision,
            "feature_cache": self.feature_mode, "selection_split": "validation",
            **({"test_eval": test} if test is not None else {}),
        }
        if getattr(self, "precision_choice", None) is not None:
            summary["mixed_precision_auto"] = self.precision_choice.to_dict()
        if getattr(self, "compile_timer", None) is not None:
            summary["compile_time_s"] = self._compile_seconds()
        if self.feature_mode:
            summary["feature_precision"] = self.feature_precision
        summary.update(self._domain_summary(state))
        if acc.is_main_process:
            from hftransfer.training.reporting import write_run_report

            write_run_report(self, summary, model_dir)
            write_json(self.output_dir / "metrics.json", summary)
            # Checkpoints only serve to resume an unfinished run; the best model is in model_dir.
            shutil.rmtree(self.output_dir / ckpt.CHECKPOINT_DIR, ignore_errors=True)
        acc.wait_for_everyone()
        if cfg.push_to_hub and acc.is_main_process:
            from hftransfer.hub.push import push_folder

            push_folder(model_dir, cfg.hub_repo_id, private=cfg.hub_private, revision=cfg.hub_revision,
                        commit_message=f"hftransfer {cfg.recipe}: best {cfg.metric_for_best}="
                                       f"{state['best_metric']:.4f}")
        acc.end_training()
        self._close_logging()
        disable_cpu_fast_path(unwrapped)  # the returned model runs on the stock kernels, like a reloaded one
        return TrainResult(self.output_dir, model_dir, state["best_metric"], state["best_epoch"], state["history"],
                           final, unwrapped, test_metrics=test)

    def _evaluate_test(self) -> dict[str, Any] | None:
        """Score the best model (already in memory) once on ``data.test``; never used for model selection."""
        from hftransfer.metrics import classification_report, compute_classification_metrics, confusion_matrix

        data, cfg = self.data, self.config
        if data.test is None:
            return None
        model = self.accelerator.unwrap_model(self.model)
        if model.modality == "image":
            dataset = ImageDataset(data.test, model.transform(train=False), seed=cfg.seed)
            lengths, collate = None, None
        else:
            tok = model.preprocessor.tokenizer
            dataset = tokenize_split(data.test, tok, model.preprocessor.max_length)
            lengths, collate = [len(x) for x in dataset.columns["input_ids"]], PadCollator(tok.pad_token_id or 0)
        loader = self.accelerator.prepare_data_loader(build_loader(
            dataset, cfg.eval_batch_size or cfg.batch_size, shuffle=False, seed=cfg.seed, num_workers=cfg.num_workers,
            lengths=lengths, collate_fn=collate))
        logits, labels, loss = self.predict_eval(loader)
        preds = logits.argmax(-1)
        test = {"loss": loss, **compute_classification_metrics(logits, labels, data.label_names),
                "per_class": classification_report(preds, labels, data.label_names),
                "confusion_matrix": confusion_matrix(preds, labels, data.num_labels)}
        scalars = {k: v for k, v in test.items() if isinstance(v, float)}
        self._log("test (best epoch, held out): " + " | ".join(f"{k} {v:.4g}" for k, v in scalars.items()))
        if cfg.report_to:
            self.accelerator.log({f"test/{k}": v for k, v in scalars.items()})
        return test

    def _load_best(self, model_dir: Path) -> None:
        unwrapped = self.accelerator.unwrap_model(self.model)
        for name in (FULL_WEIGHTS, TRAINED_WEIGHTS):
            if (model_dir / name).is_file():
                state = load_state_dict(model_dir / name)
                if shards_parameters(self.accelerator):
                    load_full_state_dict(self.accelerator, self.model, state, strict=name == FULL_WEIGHTS)
                else:
                    unwrapped.load_state_dict(state, strict=name == FULL_WEIGHTS)
                return

    def _channels_last_blocked_by_fsdp(self) -> bool:
        """FSDP2 shards only contiguous parameters: under FSDP, model.channels_last is skipped (and logged)."""
        if sharding_kind(self.accelerator) != "fsdp":
            return False
        self._log("model.channels_last skipped: FSDP shards contiguous (NCHW) parameters only")
        return True

    def _sharded_checkpoint_skipped(self) -> bool:
        """Resume checkpoints hold one process's full state; with sharded state (FSDP, ZeRO) none are written."""
        kind = sharding_kind(self.accelerator)
        if kind is None:
            return False
        if not getattr(self, "_said_no_checkpoints", False):
            self._log(f"resume checkpoints are not written under {kind}: the model/optimizer state is sharded "
                      "(the best model is still saved, gathered, in output_dir/model)")
            self._said_no_checkpoints = True
        return True

    def _close_logging(self) -> None:
        timer = getattr(self, "compile_timer", None)
        if timer is not None:
            timer.__exit__(None, None, None)
        handler = getattr(self, "_log_handler", None)
        if handler is not None:
            logger.removeHandler(handler)
            handler.close()


def _reset_accelerate_state() -> None:
    """Let several runs with different precision share one Python process (notebooks, test suites).

    accelerate keeps a process-wide singleton; the process group (PartialState) is kept, only the per-run state goes.
    """
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()


def _flat_hparams(cfg: TrainConfig) -> dict[str, Any]:
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}{k}.", v)
        elif isinstance(value, (int, float, str, bool)):
            flat[prefix.rstrip(".")] = value

    walk("", cfg.to_dict())
    return flat


def train(config: TrainConfig | dict | str | Path, overrides: list[str] | None = None,
          callbacks: list[Callback] | None = None, data: LoadedData | None = None) -> TrainResult:
    """Run a recipe: ``config`` is a :class:`TrainConfig`, a dict, or a YAML path (plus ``key=value`` overrides)."""
    if isinstance(config, (str, Path)):
        config = TrainConfig.from_yaml(config, overrides)
    elif isinstance(config, dict):
        from hftransfer.training.config import apply_overrides

        config = TrainConfig.from_dict(apply_overrides(config, overrides or []))
    elif overrides:
        from hftransfer.training.config import apply_overrides

        config = TrainConfig.from_dict(apply_overrides(config.to_dict(), overrides), recipe_defaults=False)
    return TransferTrainer(config, callbacks=callbacks, data=data).train()
