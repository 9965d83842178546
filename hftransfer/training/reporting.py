"""End-of-run artefacts in the model folder: model card (README.md), confusion matrix and training curves."""

from __future__ import annotations

import dataclasses
import logging
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

from hftransfer.data.report import format_data_report_markdown
from hftransfer.hub.card import CardInfo, DatasetInfo, write_model_card
from hftransfer.hub.push import push_folder
from hftransfer.metrics.plots import plot_confusion_matrix, plot_training_curves
from hftransfer.recipes import get_recipe
from hftransfer.training.checkpoint import CHECKPOINT_DIR, METRICS_FILE
from hftransfer.utils.io import write_json


logger = logging.getLogger("hftransfer")
_CARD_KINDS = {"imagefolder": "imagefolder", "csv": "csv", "json": "json", "hub": "hub"}


def dataset_info(description) -> Any:
    return DatasetInfo(name=description.name, kind=_CARD_KINDS.get(description.kind, "arrays"),
                       path=description.path, num_samples=dict(description.num_samples),
                       label_names=list(description.label_names))


def run_summary(trainer, state, final: dict[str, Any], test: dict[str, Any] | None,
                wise_ft: dict[str, Any] | None = None) -> dict[str, Any]:
    """metrics.json of a finished run (the best model, or the WiSE-FT mix chosen, is in memory)."""
    cfg, acc, data = trainer.config, trainer.accelerator, trainer.data
    summary = {
        "recipe": cfg.recipe, "model": cfg.model.name, "best_epoch": state.best_epoch,
        "metric_for_best": cfg.metric_for_best, "best_metric": state.best_metric,
        "history": state.history, "final_eval": final,
        "parameters": acc.unwrap_model(trainer.model).trainable_summary(),
        "data": dataclasses.asdict(data.report) if dataclasses.is_dataclass(data.report) else {},
        "num_processes": acc.num_processes, "mixed_precision": trainer.mixed_precision,
        "feature_cache": trainer.feature_mode, "selection_split": "validation",
        **({"test_eval": test} if test is not None else {}),
    }
    if trainer.precision_choice is not None:
        summary["mixed_precision_auto"] = trainer.precision_choice.to_dict()
    if trainer.compile_timer is not None:
        summary["compile_time_s"] = trainer.compile_timer.seconds
    if trainer.feature_mode:
        summary["feature_precision"] = trainer.feature_precision
    if trainer.head_warmup:
        summary["head_warmup"] = trainer.head_warmup
    summary.update(trainer.domain.summary(trainer.predict_eval, best_epoch=state.best_epoch,
                                          history=state.history, mixed=wise_ft is not None))
    if wise_ft is not None:
        summary["wise_ft"] = wise_ft
    return summary


def publish_run(trainer, summary: dict[str, Any], model_dir: Path) -> None:
    """The main process writes the card, plots and metrics.json and drops the resume checkpoints (the best model is
    in ``model_dir``); then the folder is pushed when the config asks. Every process calls it."""
    acc, cfg = trainer.accelerator, trainer.config
    if acc.is_main_process:
        write_run_report(trainer, summary, model_dir)
        write_json(trainer.output_dir / METRICS_FILE, summary)
        shutil.rmtree(trainer.output_dir / CHECKPOINT_DIR, ignore_errors=True)
    acc.wait_for_everyone()
    if cfg.push_to_hub and acc.is_main_process:
        push_folder(model_dir, cfg.hub_repo_id, private=cfg.hub_private, revision=cfg.hub_revision,
                    commit_message=f"hftransfer {cfg.recipe}: best {cfg.metric_for_best}={summary['best_metric']:.4f}")


def write_run_report(trainer, summary: dict[str, Any], model_dir: Path) -> None:
    """Plots (when matplotlib is installed) and the model card, written into ``model_dir``."""

    cfg = trainer.config
    final = summary["final_eval"]
    test = summary.get("test_eval")
    # With a test split, the per-class report and confusion matrix show the held-out numbers.
    shown, shown_split = (test, "test") if test is not None else (final, "validation")
    images = {}
    try:
        plot_confusion_matrix(shown["confusion_matrix"], trainer.data.label_names, model_dir / "confusion_matrix.png")
        plot_training_curves(summary["history"], model_dir / "training_curves.png")
        images = {"confusion_matrix_image": "confusion_matrix.png", "training_curves_image": "training_curves.png"}
    except ImportError as err:
        logger.warning("plots skipped: %s", err)
    model = trainer.accelerator.unwrap_model(trainer.model)
    spec = model.backbone.spec
    scalar = {k: v for k, v in final.items() if isinstance(v, (int, float))}
    results = {"validation": scalar}
    if test is not None:
        results["test"] = {k: v for k, v in test.items() if isinstance(v, (int, float))}
    report = getattr(trainer, "data_report", None)
    params = summary["parameters"]
    info = CardInfo(
        model_name=cfg.hub_repo_id or Path(cfg.output_dir).name,
        repo_id=cfg.hub_repo_id,
        base_model=spec.name,
        base_model_revision=spec.revision,
        task=model.task,
        recipe=cfg.recipe,
        hyperparameters={**_hyperparameters(cfg, getattr(trainer, "precision_choice", None), summary["objective"]),
                         **_wise_ft(summary), "defaults": _defaults_note(cfg.recipe, trainer.data.modality)},
        trainable_params=params["trainable_params"],
        all_params=params["all_params"],
        datasets=[dataset_info(trainer.data.description)],
        eval_results={**results, **_target_results(summary)},
        selection_split="validation",
        per_class_report=shown["per_class"],
        per_class_split=shown_split,
        data_report=format_data_report_markdown(report) if report else None,
        command=" ".join(shlex.quote(a) for a in sys.argv) if sys.argv and sys.argv[0] else None,
        config_yaml=cfg.to_yaml(),
        domain_adaptation=_domain_adaptation(summary, scalar),
        **images,
    )
    write_model_card(info, model_dir)


def _hyperparameters(cfg, precision_choice: Any = None, objective: dict[str, Any] | None = None) -> dict[str, Any]:
    data = cfg.to_dict()
    if precision_choice is not None:  # mixed_precision: auto -> what it chose and why
        data["mixed_precision"] = f"auto -> {precision_choice.mixed_precision} ({precision_choice.reason})"
    if objective and objective.get("name") != "source_only":  # the values the run used (modality defaults resolved)
        data["objective"] = objective
    keep = ("recipe", "method", "optim", "scheduler", "epochs", "batch_size", "gradient_accumulation_steps",
            "max_grad_norm", "label_smoothing", "mixed_precision", "seed", "augment", "mixup_alpha", "cutmix_alpha",
            "unfreeze_schedule", "early_stopping_patience", "metric_for_best", "objective", "model_selection")
    out = {k: data[k] for k in keep if k in data and data[k] not in (None, [], {})}
    out["image_size"] = data["model"].get("image_size")
    return {k: v for k, v in out.items() if v is not None}


def _wise_ft(summary: dict[str, Any]) -> dict[str, Any]:
    """The card's line for a WiSE-FT run: the alphas tried and the one saved (chosen on validation)."""
    record = summary.get("wise_ft")
    if not record:
        return {}
    curve = ", ".join(f"{row['alpha']:g}: {row[record['selection']['metric']]:.4f}" for row in record["curve"])
    return {"wise_ft": f"alpha {record['alpha']:g} saved ((1 - alpha) * start + alpha * fine-tuned; validation "
                       f"{record['selection']['metric']} per alpha: {curve})"}


def _defaults_note(recipe: str, modality: str) -> str:
    """Where the values the user did not set came from (recipes may default differently per backbone family)."""
    per_family = bool(get_recipe(recipe).family_defaults.get(modality))
    return f"recipe {recipe!r}" + (f" for {modality} backbones" if per_family else "") + " (see `hftransfer recipes`)"


def _target_results(summary: dict[str, Any]) -> dict[str, dict[str, float]]:
    target = summary.get("target_eval")
    if not target:
        return {}
    return {"target_eval (reported only)" if not summary.get("selection_uses_target_labels") else "target_eval":
            {k: v for k, v in target.items() if isinstance(v, (int, float))}}


def _domain_adaptation(summary: dict[str, Any], source: dict[str, float]) -> dict[str, Any] | None:
    """The card's domain-adaptation section, for runs with an adaptation objective or target data."""
    objective = summary.get("objective") or {}
    if objective.get("name", "source_only") == "source_only" and "target_eval" not in summary:
        return None
    keys = ("objective", "model_selection", "selected_on", "selection_uses_target_labels", "source_only_baseline",
            "adaptation_check")
    out = {k: summary[k] for k in keys if k in summary}
    out["source"] = source
    if "target_eval" in summary:
        out["target_eval"] = {k: v for k, v in summary["target_eval"].items() if isinstance(v, (int, float))}
    return out
