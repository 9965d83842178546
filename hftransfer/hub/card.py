# Copyright 2025 The hftransfer Authors. Licensed under the Apache License, Version 2.0.
"""Model cards: `model-index` metadata from any metric, and re-rendering that keeps the user's edits.

The card body is a Jinja template (`model_cards/hftransfer_model_card.md`). Generated parts sit between
`<!-- hftransfer:begin NAME -->` and `<!-- hftransfer:end NAME -->` (:mod:`hftransfer.hub.card_sections`);
re-rendering an existing README replaces only those parts and the metadata keys hftransfer owns (see
`OWNED_METADATA_KEYS`).
"""

from __future__ import annotations

import importlib.metadata
import math
import platform
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from hftransfer.errors import ConfigurationError
from hftransfer.hub.card_sections import card_sections, generated_tags, put_section, replace_sections
from hftransfer.hub.secrets import REDACTED, is_secret_key, redact_secrets
from hftransfer.metrics.classification import format_report_markdown
from hftransfer.saved_format import HFTRANSFER_CONFIG, read_model_config
from hftransfer.utils.hub_ids import is_repo_id


TASKS = ("image-classification", "text-classification")
DATASET_KINDS = ("hub", "imagefolder", "csv", "json", "arrays")

# Metadata keys regenerated on every render. Other keys (license, language, ...) belong to the user once written.
OWNED_METADATA_KEYS = ("library_name", "base_model", "tags", "datasets", "metrics", "model-index")
# Filled in only when the existing card does not set them.
DEFAULT_METADATA_KEYS = ("license", "pipeline_tag")

VERSIONED_PACKAGES = (
    "hftransfer",
    "torch",
    "transformers",
    "timm",
    "peft",
    "accelerate",
    "datasets",
    "evaluate",
    "huggingface_hub",
)

_PACKAGED_TEMPLATE = Path(__file__).parent / "templates" / "model_card.md"
_REPO_TEMPLATE = Path(__file__).resolve().parents[2] / "model_cards" / "hftransfer_model_card.md"


def collect_versions(packages: tuple[str, ...] = VERSIONED_PACKAGES) -> dict[str, str]:
    """Installed versions of `packages` (plus Python), read with `importlib.metadata`; `"not installed"` if absent."""
    versions = {"python": platform.python_version()}
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            # A source checkout (not pip-installed) still knows its own version.
            module = sys.modules.get(package)
            versions[package] = getattr(module, "__version__", None) or "not installed"
    return versions


@dataclass
class DatasetInfo:
    """One dataset used for training or evaluation.

    Args:
        name (`str`): Hub dataset id for `kind="hub"`, else a short local name (e.g. `"flowers"`).
        kind (`str`): `"hub"`, `"imagefolder"`, `"csv"`, `"json"` or `"arrays"`.
        path (`str`, *optional*): Local folder or file; only its basename is shown on the card.
        num_samples (`dict[str, int]`, *optional*): Samples per split, e.g. `{"train": 800, "validation": 200}`.
        label_names (`list[str]`, *optional*): Class names in class-id order.
        config (`str`, *optional*): Hub dataset configuration name.
        revision (`str`, *optional*): Hub dataset revision.
    """

    name: str
    kind: Literal["hub", "imagefolder", "csv", "json", "arrays"] = "hub"
    path: str | None = None
    num_samples: dict[str, int] = field(default_factory=dict)
    label_names: list[str] = field(default_factory=list)
    config: str | None = None
    revision: str | None = None

    def __post_init__(self):
        if self.kind not in DATASET_KINDS:
            raise ValueError(f"`kind` must be one of {DATASET_KINDS}, got {self.kind!r} for dataset {self.name!r}.")


@dataclass
class CardInfo:
    """Everything a model card shows. There is deliberately no token field: cards are public.

    Args:
        model_name (`str`): Card title and `model-index` name.
        base_model (`str`): Checkpoint fine-tuned from, e.g. `"timm/efficientnet_lite0.ra_in1k"`; it goes into the
            `base_model` metadata only when it is a Hub id (`org/name`, optionally `hf-hub:` prefixed).
        task (`str`): `"image-classification"` or `"text-classification"`.
        recipe (`str`): hftransfer recipe name, e.g. `"lora"`.
        repo_id (`str`, *optional*): Hub repo used in the usage snippet; defaults to `model_name`.
        base_model_revision (`str`, *optional*): Revision of the base checkpoint.
        hyperparameters (`dict`, *optional*): Shown as a table; nested dicts are flattened with dots.
        trainable_params / all_params (`int`, *optional*): Parameter counts.
        datasets (`list[DatasetInfo]`, *optional*): Training/evaluation data. Each split's results are attributed to
            the first dataset that has that split in `num_samples` (else the first dataset).
        eval_results (`dict[str, dict[str, float]]`, *optional*): `{split: {metric_name: value}}`, any metric names.
        per_class_report (`dict`, *optional*): From `hftransfer.metrics.classification_report`.
        per_class_split (`str`, *optional*): Split the per-class report was computed on.
        selection_split (`str`, *optional*): The split that picked the best epoch or checkpoint; its results are
            marked as such (they lean optimistic), and every other split in `eval_results` is held out.
        data_report (`str`, *optional*): Markdown summary of the training data (see `hftransfer.data.report`).
        confusion_matrix_image / training_curves_image (`str`, *optional*): PNG paths relative to the README.
        command (`str`, *optional*): Exact launch command. Secrets are redacted when rendering.
        config_yaml (`str`, *optional*): Resolved YAML config. Secrets are redacted when rendering.
        versions (`dict[str, str]`, *optional*): Framework versions; defaults to [`collect_versions`].
        license (`str`, *optional*): Written only if the existing card has no license.
        tags (`list[str]`, *optional*): Extra tags; recipe, task and `"hftransfer"` are always added.
        domain_adaptation (`dict`, *optional*): A domain-adaptation run: `objective` (name + hyperparameters),
            `model_selection`, `selection_uses_target_labels`, `source` / `target_eval` metrics and an optional
            `source_only_baseline`; shown as its own section with the target numbers marked as such.

    Example:

    ```py
    >>> from hftransfer.hub.card import CardInfo, render_model_card
    >>> info = CardInfo(model_name="lite0-flowers", base_model="timm/efficientnet_lite0.ra_in1k",
    ...                 task="image-classification", recipe="lora", eval_results={"validation": {"accuracy": 0.9}})
    >>> render_model_card(info).data.library_name
    'hftransfer'
    ```
    """

    model_name: str
    base_model: str
    task: Literal["image-classification", "text-classification"]
    recipe: str
    repo_id: str | None = None
    base_model_revision: str | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    trainable_params: int | None = None
    all_params: int | None = None
    datasets: list[DatasetInfo] = field(default_factory=list)
    eval_results: dict[str, dict[str, float]] = field(default_factory=dict)
    per_class_report: dict[str, Any] | None = None
    per_class_split: str | None = None
    selection_split: str | None = None
    data_report: str | None = None
    confusion_matrix_image: str | None = None
    training_curves_image: str | None = None
    command: str | None = None
    config_yaml: str | None = None
    versions: dict[str, str] = field(default_factory=collect_versions)
    license: str | None = None
    tags: list[str] = field(default_factory=list)
    domain_adaptation: dict[str, Any] | None = None

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"`task` must be one of {TASKS}, got {self.task!r}.")
        if not self.model_name:
            raise ValueError("`model_name` must be a non-empty string; it names the model in `model-index`.")
        self.datasets = [DatasetInfo(**d) if isinstance(d, Mapping) else d for d in self.datasets]


def default_template_path() -> Path:
    """The packaged template (installed wheels), else `model_cards/hftransfer_model_card.md` of a source checkout."""
    for path in (_PACKAGED_TEMPLATE, _REPO_TEMPLATE):
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"No model card template at {_PACKAGED_TEMPLATE} or {_REPO_TEMPLATE}. Reinstall hftransfer or pass "
        "`template_path`."
    )


def _hub_base_model(base_model: str) -> str | None:
    name = base_model.removeprefix("hf-hub:")
    return name if is_repo_id(name, namespaced=True) else None


def _generated_tags(info: CardInfo) -> list[str]:
    return list(dict.fromkeys([info.recipe, info.task, "hftransfer", *info.tags]))


def _dataset_for_split(info: CardInfo, split: str) -> DatasetInfo:
    for dataset in info.datasets:
        if split in dataset.num_samples:
            return dataset
    return info.datasets[0] if info.datasets else DatasetInfo(name="custom", kind="arrays")


def _eval_results(info: CardInfo) -> list[EvalResult]:
    results = []
    for split, metrics in info.eval_results.items():
        results += split_eval_results(info.task, _dataset_for_split(info, split), split, metrics)
    return results


def split_eval_results(task: str, dataset: DatasetInfo, split: str, metrics: Mapping[str, float]) -> list[EvalResult]:
    """``model-index`` entries for one split's ``metrics`` (NaN/inf left out: the hub rejects them)."""
    hub = dataset.kind == "hub"
    return [
        EvalResult(
            task_type=task,
            dataset_type=dataset.name if hub else dataset.kind,
            dataset_name=dataset.name,
            dataset_split=split,
            dataset_config=dataset.config if hub else None,
            dataset_revision=dataset.revision if hub else None,
            metric_type=name,
            metric_name=name,
            metric_value=float(value),
        )
        for name, value in metrics.items()
        if math.isfinite(float(value))
    ]


def build_card_data(info: CardInfo) -> ModelCardData:
    """The card metadata: `library_name`, `base_model`, tags, datasets, metrics and a `model-index` of every result."""
    metric_names = list(dict.fromkeys(name for metrics in info.eval_results.values() for name in metrics))
    return ModelCardData(
        library_name="hftransfer",
        base_model=_hub_base_model(info.base_model),
        license=info.license,
        pipeline_tag=info.task,
        tags=_generated_tags(info),
        datasets=list(dict.fromkeys(dataset.name for dataset in info.datasets)) or None,
        metrics=metric_names or None,
        eval_results=_eval_results(info) or None,
        model_name=info.model_name,
    )


def _cell(value: Any, metric: bool) -> str:
    if metric and isinstance(value, float) and math.isfinite(value):
        value = f"{value:.4f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(headers: list[str], rows: list[list[Any]], metric: bool = False) -> str:
    """Markdown table; `metric=True` prints floats with 4 decimals and right-aligns the value columns."""
    align = ["--:" if metric else ":--"] * (len(headers) - 1)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join([":--", *align]) + "|"]
    lines += ["| " + " | ".join(_cell(value, metric) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = REDACTED if is_secret_key(name) and value else value
    return flat


def _fence(text: str) -> str:
    # A fence longer than any backtick run inside keeps a config containing ``` from closing the block early.
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _results_table(eval_results: dict[str, dict[str, float]], selection_split: str | None = None) -> str:
    if not eval_results:
        return ""
    splits = list(eval_results)
    metrics = list(dict.fromkeys(name for values in eval_results.values() for name in values))
    rows = [[name] + [eval_results[split].get(name, "–") for split in splits] for name in metrics]
    headers = [f"{split} (model selection)" if split == selection_split else split for split in splits]
    return _table(["Metric", *headers], rows, metric=True)


def _selection_note(info: CardInfo) -> str:
    if not info.selection_split or info.selection_split not in info.eval_results:
        return ""
    held_out = [split for split in info.eval_results
                if split != info.selection_split and not split.startswith("target_eval")]
    note = f"The `{info.selection_split}` split picked the best checkpoint, so its numbers lean optimistic."
    if held_out:
        return note + f" {', '.join(f'`{s}`' for s in held_out)} was held out and scored once, after training."
    return note + " No held-out test split was scored (set `data.test` for honest numbers)."


def _domain_markdown(da: dict[str, Any] | None) -> str:
    """The domain-adaptation section: objective, how the checkpoint was chosen, source vs target numbers."""
    if not da:
        return ""
    objective = dict(da.get("objective") or {})
    name = objective.pop("name", "?")
    options = ", ".join(f"`{k}={v}`" for k, v in sorted(objective.items()))
    selection = da.get("model_selection", "source")
    lines = [f"- Objective: `{name}`" + (f" ({options})" if options else ""),
             f"- Best checkpoint chosen on: `{da.get('selected_on', selection)}` "
             + ("(**target labels were used for selection**: the target numbers below are optimistic)"
                if da.get("selection_uses_target_labels") else "(no target labels used)")]
    rows = []
    metric = "accuracy"
    source, target = da.get("source") or {}, da.get("target_eval") or {}
    if metric in source:
        rows.append(["source (held-out validation)", source[metric]])
    if metric in target:
        rows.append(["target (labelled evaluation split, reported only)", target[metric]])
    baseline = da.get("source_only_baseline") or {}
    if metric in baseline.get("source", {}):
        rows.append(["source-only baseline: source", baseline["source"][metric]])
    if metric in baseline.get("target_eval", {}):
        rows.append(["source-only baseline: target", baseline["target_eval"][metric]])
    check = da.get("adaptation_check") or {}
    if check.get("metric") == metric:
        if check.get("before_from") == "source_warmup":  # a source_only_baseline has its own row above
            rows.append([f"target at the end of the source warm-up (epoch {check['before_epoch']}, before "
                         "adaptation)", check["before_adaptation"]])
        if check.get("adaptation_hurt"):
            lines.append(f"- **Adaptation lowered the target {metric}** ({check['before_adaptation']:.4f} before it, "
                         f"{check['selected']:.4f} for this model), which source validation could not see.")
    table = _table(["Split", "Accuracy"], rows, metric=True) if rows else ""
    return "\n".join(lines) + ("\n\n" + table if table else "")


def _datasets_markdown(datasets: list[DatasetInfo], max_labels: int = 50) -> str:
    blocks = []
    for dataset in datasets:
        if dataset.kind == "hub":
            title = f"- [`{dataset.name}`](https://huggingface.co/datasets/{dataset.name}) (Hub dataset"
            title += f", config `{dataset.config}`" if dataset.config else ""
            title += f", revision `{dataset.revision}`" if dataset.revision else ""
            title += ")"
        else:
            # Only the basename: full local paths leak user names and mean nothing to readers of the card.
            source = f" from `{Path(dataset.path).name}`" if dataset.path else ""
            title = f"- `{dataset.name}`: local {dataset.kind} data{source}"
        lines = [title]
        if dataset.num_samples:
            splits = ", ".join(f"{split}: {count:,}" for split, count in dataset.num_samples.items())
            lines.append(f"  - samples per split: {splits}")
        if dataset.label_names:
            shown = ", ".join(f"`{name}`" for name in dataset.label_names[:max_labels])
            hidden = len(dataset.label_names) - max_labels
            more = f" and {hidden} more" if hidden > 0 else ""
            lines.append(f"  - {len(dataset.label_names)} labels: {shown}{more}")
        blocks.append("\n".join(lines))
    return "\n".join(blocks)


def _params_line(info: CardInfo) -> str:
    if info.trainable_params is None or info.all_params is None:
        return ""
    percent = 100 * info.trainable_params / info.all_params if info.all_params else 0.0
    # Same wording as peft's print_trainable_parameters, so the card matches what training printed.
    return (
        f"trainable params: {info.trainable_params:,} || all params: {info.all_params:,} || trainable%: {percent:.4f}"
    )


def _template_kwargs(info: CardInfo) -> dict[str, Any]:
    hub_id = _hub_base_model(info.base_model)
    command = redact_secrets(info.command.strip()) if info.command else ""
    config_yaml = redact_secrets(info.config_yaml.strip()) if info.config_yaml else ""
    num_labels = next((len(d.label_names) for d in info.datasets if d.label_names), 0)
    hyperparameters = _flatten(info.hyperparameters)
    return {
        "model_name": info.model_name,
        "repo_id": info.repo_id or info.model_name,
        "base_model_link": f"[`{hub_id}`](https://huggingface.co/{hub_id})" if hub_id else f"`{info.base_model}`",
        "base_model_revision": info.base_model_revision,
        "recipe": info.recipe,
        "task_title": info.task.replace("-", " "),
        "num_labels": num_labels,
        "generated_tags": _generated_tags(info),
        "results_table": _results_table(info.eval_results, info.selection_split),
        "selection_note": _selection_note(info),
        "data_report": info.data_report or "",
        "domain_adaptation_markdown": _domain_markdown(info.domain_adaptation),
        "per_class_table": format_report_markdown(info.per_class_report) if info.per_class_report else "",
        "per_class_split": info.per_class_split,
        "confusion_matrix_image": info.confusion_matrix_image,
        "training_curves_image": info.training_curves_image,
        "params_line": _params_line(info),
        "hyperparameters_table": _table(["Hyperparameter", "Value"], [[k, v] for k, v in hyperparameters.items()])
        if hyperparameters
        else "",
        "datasets_markdown": _datasets_markdown(info.datasets),
        "image_task": info.task == "image-classification",
        "predict_example": '[Image.open("example.jpg").convert("RGB")], top_k=3'
        if info.task == "image-classification"
        else '["I loved it!"], top_k=2',
        "command": command,
        "command_fence": _fence(command),
        "config_yaml": config_yaml,
        "config_fence": _fence(config_yaml),
        "versions_table": _table(["Library", "Version"], [[k, v] for k, v in info.versions.items()])
        if info.versions
        else "",
    }


def merge_cards(existing: str, fresh: ModelCard) -> ModelCard:
    """``fresh`` merged into the ``existing`` card text: generated metadata and sections replaced, the user's kept."""
    old = ModelCard(existing, ignore_metadata_errors=True)
    old_meta = old.data.to_dict()
    new_meta = fresh.data.to_dict()

    # Tags: drop the ones the previous render generated (recorded in the header), keep the user's own.
    previous_generated = set(generated_tags(old.text))
    generated = new_meta.get("tags", [])
    user_tags = [tag for tag in old_meta.get("tags") or [] if tag not in previous_generated and tag not in generated]

    merged = {key: value for key, value in old_meta.items() if key not in OWNED_METADATA_KEYS}
    for key in OWNED_METADATA_KEYS:
        if key in new_meta:
            merged[key] = new_meta[key]
    merged["tags"] = generated + user_tags
    for key in DEFAULT_METADATA_KEYS:
        if key not in merged and key in new_meta:
            merged[key] = new_meta[key]
    data = ModelCardData(ignore_metadata_errors=True, **merged)

    new_sections = card_sections(fresh.text, "rendered template")
    old_sections = card_sections(old.text, "existing card")
    if old_sections:
        # Only blocks still marked in the existing card are regenerated: deleting a block's markers opts it out.
        body = replace_sections(old.text, new_sections)
    else:
        user_text = old.text.strip("\n")
        body = (f"{user_text}\n\n" if user_text else "\n") + "\n\n".join(new_sections.values()) + "\n"
    yaml_block = data.to_yaml(original_order=list(old_meta))
    return ModelCard(f"---\n{yaml_block}\n---\n{body}", ignore_metadata_errors=True)


def render_model_card(
    info: CardInfo, existing: str | None = None, template_path: str | Path | None = None
) -> ModelCard:
    """Render the model card, or update `existing` README text in place.

    With `existing`, only the text between hftransfer markers and the metadata keys in `OWNED_METADATA_KEYS` are
    regenerated (tags: only those hftransfer added); the user's text, metadata keys (license, language, ...) and own
    tags stay as they are. A card without any hftransfer marker gets the generated sections appended.

    Args:
        info ([`CardInfo`]): What to show.
        existing (`str`, *optional*): Current README.md content.
        template_path (`str` or `Path`, *optional*): A custom Jinja template; defaults to [`default_template_path`].

    Returns:
        `huggingface_hub.ModelCard`: Save it with `card.save("README.md")`.
    """
    template = Path(template_path) if template_path else default_template_path()
    rendered = ModelCard.from_template(build_card_data(info), template_path=str(template), **_template_kwargs(info))
    # Last line of defence: nothing generated may carry a token, whatever field it came in through.
    fresh = ModelCard(redact_secrets(rendered.content).rstrip("\n") + "\n")
    return fresh if existing is None else merge_cards(existing, fresh)


def write_model_card(info: CardInfo, folder: str | Path, template_path: str | Path | None = None) -> Path:
    """Render into `folder/README.md`, updating (not overwriting) a README that is already there."""
    path = Path(folder) / "README.md"
    existing = path.read_text(encoding="utf-8") if path.is_file() else None
    path.parent.mkdir(parents=True, exist_ok=True)
    render_model_card(info, existing=existing, template_path=template_path).save(path)
    return path


def add_eval_results(
    existing: str | None,
    metrics: Mapping[str, float],
    dataset: DatasetInfo,
    split: str,
    task: str,
    model_name: str,
) -> ModelCard:
    """Add one evaluation (`metrics` on `split` of `dataset`) to the card's `model-index`, keeping the rest.

    Earlier results of the same dataset, split and metric are replaced; every other metadata key, result and the
    card text stay as they are. `existing` is the README.md text (None starts an empty card).
    """
    if task not in TASKS:
        raise ValueError(f"`task` must be one of {TASKS}, got {task!r}.")
    card = ModelCard(existing if existing and existing.strip() else "---\n---\n", ignore_metadata_errors=True)
    fresh = split_eval_results(task, dataset, split, metrics)
    replaced = {(dataset.name, split, result.metric_type) for result in fresh}
    kept = [
        result
        for result in card.data.eval_results or []
        if (result.dataset_name, result.dataset_split, result.metric_type) not in replaced
    ]
    card.data.eval_results = kept + fresh
    card.data.model_name = card.data.model_name or model_name
    card.data.metrics = list(dict.fromkeys([*(card.data.metrics or []), *(r.metric_type for r in fresh)]))
    return card


def method_options(config: dict[str, Any]) -> dict[str, Any]:
    """A method config as card hyperparameters (``method.<key>``)."""
    # resolved_* fields are bookkeeping for exact rebuilds (e.g. every LoRA target), not hyperparameters.
    return {f"method.{k}": v for k, v in config.items() if v not in (None, [], {}) and not k.startswith("resolved_")}


def card_from_config(config: dict[str, Any], repo_id: str) -> str:
    """A minimal card for a folder saved without one (``save_pretrained`` writes no README)."""
    backbone = config.get("backbone") or {}
    method = config.get("method") or {}
    params = config.get("num_parameters") or {}
    info = CardInfo(
        model_name=repo_id.split("/")[-1],
        repo_id=repo_id,
        base_model=str(backbone.get("name") or "unknown"),
        base_model_revision=backbone.get("revision"),
        task=config.get("task", "image-classification"),
        recipe=str(method.get("name") or "full"),
        hyperparameters={"method": method.get("name"), **method_options(method.get("config") or {})},
        trainable_params=params.get("trainable_params"),
        all_params=params.get("all_params"),
    )
    return render_model_card(info).content


def add_card_section(readme: Path, markdown: str, name: str) -> Path:
    """Put ``markdown`` between the card's ``<!-- hftransfer:begin NAME -->`` / ``end`` markers (replacing an earlier
    section of that name), else append it; written to a temporary file, then renamed.

    A saved model folder without README.md first gets the card a push would generate for it (metadata, usage), so
    the section never becomes the whole card.
    """
    text = readme.read_text(encoding="utf-8") if readme.is_file() else _new_card(readme.parent)
    text = put_section(text, name, markdown)
    tmp = readme.with_name(f".{readme.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(readme)
    return readme


def check_card_folder(folder: Path) -> None:
    """A folder a card section can go into: one with a README.md, or a model saved by hftransfer (whose full card
    is written first)."""
    if not (folder / "README.md").is_file() and not (folder / HFTRANSFER_CONFIG).is_file():
        raise ConfigurationError(
            f"{str(folder)!r} has no README.md and no {HFTRANSFER_CONFIG}, so it is not a model saved by hftransfer "
            "and a card made of this section alone would lack its metadata and usage. Pass the saved model's folder "
            "(e.g. outputs/run/model), or write its README.md first."
        )


def _new_card(folder: Path) -> str:
    """The card ``folder`` (a model saved by hftransfer, without README.md) would get on push."""
    check_card_folder(folder)
    config = read_model_config(folder, str(folder / HFTRANSFER_CONFIG),
                               "Save the model again with model.save_pretrained(folder).")
    return card_from_config(config, folder.resolve().name)
