"""Experiment trackers behind ``report_to``: checked before a run starts, with local defaults for MLflow."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from hftransfer.errors import ConfigurationError


# report_to name -> (module to import, pip extra of hftransfer that installs it)
TRACKERS: dict[str, tuple[str, str]] = {
    "tensorboard": ("tensorboard", "report"),
    "mlflow": ("mlflow", "mlflow"),
    "trackio": ("trackio", "trackio"),
    "wandb": ("wandb", "wandb"),
}
PROJECT_NAME = "hftransfer"


def check_trackers(report_to: list[str] | str) -> list[str]:
    """The trackers to start (``"none"`` dropped); unknown or uninstalled ones raise before any work starts."""
    report_to = [report_to] if isinstance(report_to, str) else list(report_to)
    names = [name for name in report_to if name != "none"]
    for name in names:
        if name not in TRACKERS:
            raise ConfigurationError(f"report_to={report_to!r}: {name!r} is not a supported tracker; use any of "
                                     f"{sorted(TRACKERS)} (or 'none').")
        module, extra = TRACKERS[name]
        if importlib.util.find_spec(module) is None:
            install = f"pip install 'hftransfer[{extra}]'" if extra != "wandb" else "pip install wandb"
            raise ConfigurationError(f"report_to={report_to!r} needs the {module!r} package, which is not "
                                     f"installed: {install}, or remove {name!r} from report_to.")
    return names


def tracker_init_kwargs(names: list[str], output_dir: Path) -> dict[str, dict[str, Any]]:
    """Per-tracker ``init_kwargs`` for ``Accelerator.init_trackers``: the run is named after ``output_dir``.

    MLflow logs to a local file store in ``output_dir/logs/mlruns`` unless ``MLFLOW_TRACKING_URI`` says otherwise;
    trackio keeps its local database under ``TRACKIO_DIR`` (default ``~/.cache/huggingface/trackio``).
    """
    run_name = Path(output_dir).resolve().name
    kwargs: dict[str, dict[str, Any]] = {}
    if "mlflow" in names:
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            import mlflow  # optional dependency

            # MLflow 3 refuses the file store unless allowed; it is the only backend mlflow-skinny can write alone.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            mlflow.set_tracking_uri((Path(output_dir) / "logs" / "mlruns").resolve().as_uri())
        kwargs["mlflow"] = {"run_name": run_name}
    if "trackio" in names:
        kwargs["trackio"] = {"name": run_name}
    return kwargs


def flat_hparams(config: dict[str, Any]) -> dict[str, Any]:
    """A config dict as the flat ``{"optim.lr": 0.001, ...}`` of scalars trackers take as hyperparameters."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}{k}.", v)
        elif isinstance(value, (int, float, str, bool)):
            flat[prefix.rstrip(".")] = value

    walk("", config)
    return flat
