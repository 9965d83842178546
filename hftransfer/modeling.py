"""``AutoTransfer``: one classification model over timm and transformers backbones."""

from __future__ import annotations

import copy
import dataclasses
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn import functional as F

from hftransfer._version import __version__
from hftransfer.backbones import (
    BACKBONE_FAMILIES,
    TASK_BY_MODALITY,
    Backbone,
    BackboneSpec,
    block_class_names,
    load_backbone,
    resolve_name,
)
from hftransfer.errors import ConfigurationError, ForeignFolderError, ModelNameError, OfflineError
from hftransfer.heads import ClassificationHead
from hftransfer.hub.fetch import fetch_snapshot
from hftransfer.methods import TransferMethod, get_method
from hftransfer.saved_format import (
    BACKBONE_DIR,
    FORMAT_VERSION,
    FULL_WEIGHTS,
    HFTRANSFER_CONFIG,
    TRAINED_WEIGHTS,
    read_model_config,
)
from hftransfer.utils.io import atomic_directory, load_state_dict, save_state_dict, write_json


if TYPE_CHECKING:
    from huggingface_hub import CommitInfo

    from hftransfer.hub.card import CardInfo


logger = logging.getLogger(__name__)

SUPPORTED_TASKS = tuple(TASK_BY_MODALITY.values())


@dataclass
class TransferOutput:
    """What ``AutoTransfer.forward`` returns: ``logits`` always, ``loss`` when labels were given, ``features`` (what
    the head's last layer sees: the bottleneck output when there is one) when asked with ``return_features=True``."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None
    features: torch.Tensor | None = None

    def __getitem__(self, key: str) -> torch.Tensor | None:
        return getattr(self, key)


class AutoTransfer(nn.Module):
    """A pretrained backbone plus a classification head, with one interface whatever the source library.

    Example:
        ```py
        >>> from hftransfer import AutoTransfer
        >>> model = AutoTransfer.from_pretrained("packaged:efficientnet_lite0", num_labels=2)
        >>> batch = model.preprocess([image1, image2])        # {"pixel_values": ...}
        >>> model(**batch).logits.shape
        torch.Size([2, 2])
        ```
    """

    def __init__(self, backbone: Backbone, id2label: dict[int, str], head_dropout: float = 0.0,
                 method: TransferMethod | None = None, head_options: dict[str, Any] | None = None):
        super().__init__()
        self.backbone = backbone
        self.id2label = {int(k): str(v) for k, v in id2label.items()}
        self.label2id = {v: k for k, v in self.id2label.items()}
        self.head = ClassificationHead(backbone.num_features, len(self.id2label), head_dropout,
                                       **(head_options or {}))
        self.label_smoothing = 0.0
        self.method = method or get_method("full")
        self.method.check_backbone(self)
        self.method.apply(self)

    # --- construction ---------------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        model_name: str | Path,
        *,
        num_labels: int | None = None,
        id2label: dict[int, str] | None = None,
        label2id: dict[str, int] | None = None,
        task: str | None = None,
        method: str | None = None,
        method_config: dict[str, Any] | None = None,
        revision: str | None = None,
        token: str | bool | None = None,
        pretrained: bool = True,
        allow_pickle: bool = False,
        trust_remote_code: bool = False,
        pooling: str | None = None,
        max_length: int = 128,
        head_dropout: float = 0.0,
        **model_args: Any,
    ) -> AutoTransfer:
        """Load a backbone (timm, transformers, packaged) or a model saved by hftransfer, and attach a head.

        Args:
            model_name: a hub id, timm architecture, folder or ``packaged:<name>`` (see the README for all forms).
            num_labels / id2label / label2id: the label set of the new head. Without them a timm backbone keeps its
                pretrained classifier, and a saved hftransfer model keeps its own head.
            task: "image-classification" or "text-classification"; checked against what the backbone can do.
            method: apply a transfer method right away ("full", "linear_probe", "lora", ...).
            revision: branch, tag or commit of a hub repo. token: hub token (never written anywhere).
            pretrained: False builds the architecture with random weights.
            allow_pickle: accept pickle-only checkpoints (read with ``torch.load(weights_only=True)``).
            trust_remote_code: run custom modelling code from a transformers repo (never implicit).
            pooling: transformers pooling ("cls", "mean", "pooler"); max_length: tokenizer truncation.
        """
        if task is not None and task not in SUPPORTED_TASKS:
            raise ConfigurationError(f"task={task!r} is not supported; choose one of {list(SUPPORTED_TASKS)}.")
        labels = _resolve_labels(num_labels, id2label, label2id)
        resolved = resolve_name(model_name, revision=revision, token=token)
        if resolved.kind == "hftransfer":
            folder = Path(resolved.location)
            if resolved.source == "hub":
                folder = fetch_snapshot(resolved.location, revision=revision, token=token).local_dir
            origin = str(model_name) + (f"@{revision}" if revision and resolved.source == "hub" else "")
            model = _load_saved(cls, folder, token=token, trust_remote_code=trust_remote_code,
                                allow_pickle=allow_pickle, origin=origin)
            if task is not None and task != model.task:
                raise ConfigurationError(
                    f"task={task!r} but the saved model at {str(model_name)!r} does {model.task!r}.")
            if labels is not None and labels != model.id2label:
                model.reset_head(labels, head_dropout)
            return model

        modality = {v: k for k, v in TASK_BY_MODALITY.items()}.get(task) if resolved.kind == "transformers" else None
        backbone = load_backbone(resolved, revision=revision, token=token, pretrained=pretrained,
                                 allow_pickle=allow_pickle, trust_remote_code=trust_remote_code, pooling=pooling,
                                 max_length=max_length, modality=modality, model_args=model_args or None)
        if task is not None and task != backbone.task:
            raise ConfigurationError(
                f"task={task!r} cannot be done by {str(model_name)!r}: it is a {backbone.modality} backbone "
                f"({backbone.task}). Pick a {task.split('-')[0]} backbone or drop the task argument."
            )
        head = backbone.pretrained_head
        if labels is None:
            if head is None:
                raise ConfigurationError(
                    f"{str(model_name)!r} has no pretrained classifier to keep: pass num_labels=N or id2label={{...}}."
                )
            labels = _pretrained_labels(head)
        model = cls(backbone, labels, head_dropout=head_dropout)
        if head is not None and head.weight.shape[0] == len(labels) and labels == _pretrained_labels(head):
            with torch.no_grad():
                model.head.fc.weight.copy_(head.weight)
                if head.bias is not None:
                    model.head.fc.bias.copy_(head.bias)
        backbone.pretrained_head = None
        if method is not None:
            model.apply_method(method, method_config)
        return model

    # --- methods and heads ----------------------------------------------------------------------------------------

    def apply_method(self, name: str, config: dict[str, Any] | None = None) -> TransferMethod:
        """Switch to a transfer method (e.g. ``"lora"``): changes which parameters train (and adds adapters)."""
        if self.method.name not in ("full",) and name != self.method.name:
            raise ConfigurationError(f"The model already uses method {self.method.name!r}; merge it first "
                                     f"(model.merge_adapters()) before applying {name!r}.")
        if name == self.method.name and name != "full":
            return self.method
        method = get_method(name, config)
        method.check_backbone(self)
        self.method = method
        self.method.apply(self)
        return self.method

    def merge_adapters(self) -> AutoTransfer:
        """Fold adapter weights into the backbone (faster inference, plain weights); the model becomes ``full``."""
        if self.method.merge(self):
            self.method = get_method("full")
            self.method.apply(self)
        return self

    def reset_head(self, id2label: dict[int, str], dropout: float = 0.0, bottleneck_dim: int | None = None,
                   bottleneck_norm: str = "batch") -> None:
        """Replace the head by a new one for another label set (optionally behind a Linear-Norm-ReLU bottleneck)."""
        self.id2label = {int(k): str(v) for k, v in id2label.items()}
        self.label2id = {v: k for k, v in self.id2label.items()}
        self.head = ClassificationHead(self.backbone.num_features, len(self.id2label), dropout,
                                       bottleneck_dim=bottleneck_dim, bottleneck_norm=bottleneck_norm)
        self.method.set_trainable(self)

    # --- forward --------------------------------------------------------------------------------------------------

    def forward_features(self, **inputs: Any) -> torch.Tensor:
        """Pooled backbone features, shape (batch, num_features)."""
        return self.backbone(**self.backbone.select_inputs(inputs))

    def forward(self, labels: torch.Tensor | None = None, features: torch.Tensor | None = None,
                return_features: bool = False, **inputs: Any) -> TransferOutput:
        """Logits for a batch (``pixel_values`` or ``input_ids``/``attention_mask``); loss when labels are given.

        ``features`` skips the backbone (cached features from :meth:`forward_features`). ``return_features=True``
        also returns the representation the head's last layer sees (for domain-adaptation objectives).
        """
        if features is None:
            features = self.forward_features(**inputs)
        features = features.to(self.head.fc.weight.dtype) if not torch.is_autocast_enabled() else features
        embedded = self.head.embed(features)
        logits = self.head.fc(self.head.dropout(embedded))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
        return TransferOutput(logits=logits, loss=loss, features=embedded if return_features else None)

    # --- properties -----------------------------------------------------------------------------------------------

    @property
    def num_features(self) -> int:
        return self.backbone.num_features

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @property
    def task(self) -> str:
        return self.backbone.task

    @property
    def modality(self) -> str:
        return self.backbone.modality

    @property
    def _no_split_modules(self) -> list[str]:
        """The backbone's block classes, which accelerate's FSDP ``TRANSFORMER_BASED_WRAP`` wraps one by one."""
        return block_class_names(self.backbone)

    @property
    def preprocessor(self):
        """``ImagePreprocessor`` (PIL images -> pixel_values) or ``TextPreprocessor`` (str -> token ids)."""
        return self.backbone.preprocessor

    def preprocess(self, inputs: Any, train: bool = False) -> dict[str, torch.Tensor]:
        """Images or texts -> a batch dict ready for ``model(**batch)``."""
        if self.modality == "image":
            return self.preprocessor(inputs, train=train)
        return self.preprocessor(inputs)

    def transform(self, train: bool = False, augment: str | None = "default"):
        """The per-image transform (PIL -> tensor) the backbone expects; image backbones only."""
        if self.modality != "image":
            raise ConfigurationError("transform() is for image backbones; use model.preprocess(texts) for text.")
        return self.preprocessor.transform(train=train, augment=augment)

    def tokenize(self, texts: Any, text_pair: Any = None) -> dict[str, torch.Tensor]:
        if self.modality != "text":
            raise ConfigurationError("tokenize() is for text backbones; use model.preprocess(images) for images.")
        return self.preprocessor(texts, text_pair=text_pair)

    @torch.no_grad()
    def predict(self, inputs: Any, top_k: int = 1) -> list[list[dict[str, Any]]]:
        """Top-k labels with probabilities for a list of images or texts."""
        was_training = self.training
        self.eval()
        batch = self.preprocess(inputs)
        device = next(self.parameters()).device
        probs = self(**{k: v.to(device) for k, v in batch.items()}).logits.float().softmax(-1)
        self.train(was_training)
        top = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
        return [[{"label": self.id2label[int(i)], "score": float(s)} for s, i in zip(row_s, row_i)]
                for row_s, row_i in zip(top.values, top.indices)]

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def trainable_summary(self) -> dict[str, float]:
        trainable, total = self.num_parameters(True), self.num_parameters()
        return {"trainable_params": trainable, "all_params": total,
                "trainable_percent": round(100.0 * trainable / max(total, 1), 4)}

    def trainable_parameters_line(self) -> str:
        s = self.trainable_summary()
        return (f"trainable params: {s['trainable_params']:,} || all params: {s['all_params']:,} || "
                f"trainable%: {s['trainable_percent']:.4f}")

    def print_trainable_parameters(self) -> str:
        line = self.trainable_parameters_line()
        print(line)
        return line

    # --- saving ---------------------------------------------------------------------------------------------------

    def config_dict(self, weights: str) -> dict[str, Any]:
        return {
            "format": "hftransfer",
            "format_version": FORMAT_VERSION,
            "hftransfer_version": __version__,
            "task": self.task,
            "backbone": self.backbone.spec.to_dict(),
            "head": dict(self.head.config),
            "id2label": {str(k): v for k, v in self.id2label.items()},
            "label2id": dict(self.label2id),
            "method": self.method.to_dict(),
            "weights": weights,
            "preprocessing": self.preprocessor.to_dict(),
            "num_parameters": self.trainable_summary(),
        }

    def saves_full_weights(self) -> bool:
        """Adapter-style methods save only trained weights, when the base backbone can be fetched again."""
        spec = self.backbone.spec
        refetchable = spec.pretrained and spec.source in ("hub", "packaged")
        return self.method.saves_full_weights or not refetchable

    def state_dict_to_save(self, full: bool, state_dict: dict[str, torch.Tensor] | None = None
                           ) -> dict[str, torch.Tensor]:
        state = self.state_dict() if state_dict is None else state_dict
        if full:
            return state
        return {k: v for k, v in state.items() if self.method.is_trained_parameter(k)}

    def save_pretrained(self, save_directory: str | Path, full_weights: bool | None = None,
                        is_main_process: bool = True, extra_files: dict[str, str] | None = None,
                        state_dict: dict[str, torch.Tensor] | None = None) -> Path:
        """Write config + safetensors + backbone architecture into one folder, atomically (temp dir, then rename).

        ``full_weights=None`` picks full weights for ``full`` and trained weights only (plus a base reference) for
        adapter methods. ``is_main_process=False`` writes nothing (for distributed callers). ``state_dict``: the
        weights to write instead of this module's own (a full state dict gathered from sharded processes).
        """
        save_directory = Path(save_directory)
        if not is_main_process:
            return save_directory
        full = self.saves_full_weights() if full_weights is None else bool(full_weights)
        with atomic_directory(save_directory) as tmp:
            self.backbone.save_architecture(_mkdir(tmp / BACKBONE_DIR))
            weights = "full" if full else "trained"
            state = self.state_dict_to_save(full, state_dict)
            save_state_dict(state, tmp / (FULL_WEIGHTS if full else TRAINED_WEIGHTS),
                            metadata={"hftransfer_weights": weights})
            write_json(tmp / HFTRANSFER_CONFIG, self.config_dict(weights))
            for name, text in (extra_files or {}).items():
                (tmp / name).write_text(text, encoding="utf-8")
        return save_directory

    def push_to_hub(self, repo_id: str, **options: Any) -> CommitInfo:
        """Upload this model with a model card in one commit (options: see :func:`push_model`)."""
        return push_model(self, repo_id, **options)


def push_model(model: AutoTransfer, repo_id: str, *, merge: bool = False, card_info: CardInfo | None = None,
               full_weights: bool | None = None, private: bool = False, revision: str | None = None,
               commit_message: str | None = None, commit_description: str | None = None,
               token: str | bool | None = None, create_repo: bool = True) -> CommitInfo:
    """Save ``model`` with a model card into a temporary folder and upload it in one commit.

    Args:
        repo_id (`str`): `namespace/name` (or `name` for the token's user).
        merge (`bool`, *optional*, defaults to `False`): Fold adapters (LoRA family) into the backbone and push a
            plain full model that loads without the base backbone. Done on a copy; ``model`` is not modified.
        card_info (`CardInfo`, *optional*): What the model card shows; defaults to what the model knows (base
            backbone, method, parameter counts). Training runs write a full card with metrics instead.
        full_weights (`bool`, *optional*): Force full weights (True) or trained weights only (False); the
            default is what `save_pretrained` picks (trained weights plus a base reference for adapter methods).
        private / revision / commit_message / commit_description / token / create_repo: See
            :func:`hftransfer.hub.push_folder`; the token is sent to the hub only, never written anywhere.

    Example:

    ```py
    >>> model = AutoTransfer.from_pretrained("timm/resnet18.a1_in1k", num_labels=3, method="lora")
    >>> ...  # train
    >>> model.push_to_hub("me/resnet18-lora")               # adapter weights + base reference
    >>> model.push_to_hub("me/resnet18-merged", merge=True)  # standalone full model
    ```
    """
    from hftransfer.hub.card import write_model_card  # heavy: hub.card imports huggingface_hub
    from hftransfer.hub.push import push_folder  # heavy: hub upload code

    method_name = model.method.name
    model = merged_copy(model) if merge else model
    info = card_info if card_info is not None else model_card_info(model, repo_id, method_name if merge else None)
    if info.repo_id is None:
        info = dataclasses.replace(info, repo_id=repo_id)
    with tempfile.TemporaryDirectory(prefix="hftransfer-push-") as tmp:
        folder = model.save_pretrained(Path(tmp) / "model", full_weights=full_weights)
        write_model_card(info, folder)
        return push_folder(folder, repo_id, private=private, revision=revision, commit_message=commit_message,
                           commit_description=commit_description, token=token, create_repo=create_repo)

def merged_copy(model: AutoTransfer) -> AutoTransfer:
    """A copy with the adapters folded into the backbone (a plain ``full`` model); refused when there are none."""
    merged = copy.deepcopy(model)
    merged.merge_adapters()
    if merged.method.name != "full":
        raise ConfigurationError(
            f"merge=True folds adapters into the backbone, but method {model.method.name!r} has nothing to merge. "
            "Push without merge, or pass full_weights=True for a standalone copy with full weights.")
    return merged

def model_card_info(model: AutoTransfer, repo_id: str, merged_from: str | None = None) -> CardInfo:
    """The model card's facts that ``model`` knows (no metrics): base backbone, method and its options,
    parameter counts; ``merged_from`` names the method whose adapters were merged into it."""
    from hftransfer.hub.card import CardInfo, method_options  # heavy: hub.card imports huggingface_hub

    method_name = merged_from or model.method.name
    hyperparameters: dict[str, Any] = {"method": method_name}
    if merged_from:
        hyperparameters["merged"] = True
    else:
        hyperparameters.update(method_options(model.method.config.to_dict()))
    summary = model.trainable_summary()
    return CardInfo(model_name=repo_id.split("/")[-1], repo_id=repo_id, base_model=model.backbone.spec.name,
                    base_model_revision=model.backbone.spec.revision, task=model.task, recipe=method_name,
                    hyperparameters=hyperparameters, trainable_params=summary["trainable_params"],
                    all_params=summary["all_params"], tags=["merged"] if merged_from else [])


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _load_saved(cls: type[AutoTransfer], folder: Path, token: str | bool | None, trust_remote_code: bool,
                allow_pickle: bool, origin: str | None = None) -> AutoTransfer:
    """An hftransfer folder (``save_pretrained``'s) -> the model: its backbone (saved, or the recorded base for an
    adapter-only save), method, head and weights."""
    origin = origin or str(folder)
    config = read_model_config(folder, origin, "Load the backbone by its own name instead.")
    if int(config.get("format_version", 0)) > FORMAT_VERSION:
        raise ConfigurationError(
            f"{str(folder)!r} was saved by hftransfer {config.get('hftransfer_version')} (format "
            f"{config['format_version']}); this is hftransfer {__version__}. Upgrade hftransfer."
        )
    spec = BackboneSpec.from_dict(config["backbone"])
    if config["weights"] == "full":
        family = BACKBONE_FAMILIES[spec.family]
        backbone = family.from_architecture(folder / BACKBONE_DIR, spec, trust_remote_code=trust_remote_code)
    else:
        try:
            base = resolve_name(spec.name, revision=spec.revision, token=token)
            backbone = load_backbone(base, revision=spec.revision, token=token, pretrained=True,
                                     allow_pickle=allow_pickle, trust_remote_code=trust_remote_code,
                                     pooling=spec.options.get("pooling"),
                                     max_length=config.get("preprocessing", {}).get("max_length", 128),
                                     modality=config["task"].split("-")[0],
                                     model_args=spec.options.get("model_args") or None)
        except (ModelNameError, ForeignFolderError, OfflineError) as err:
            raise type(err)(
                f"{origin!r} holds only the weights trained by method {config['method']['name']!r}; its base "
                f"backbone {spec.name!r} (revision {spec.revision!r}, named in {HFTRANSFER_CONFIG}) could not be "
                f"loaded: {err}\nMake the base available (same name and revision), or push the model with full "
                "weights (model.push_to_hub(..., merge=True) or save_pretrained(..., full_weights=True))."
            ) from err
        backbone.pretrained_head = None
    method = get_method(config["method"]["name"], config["method"]["config"])
    head_options = {k: config["head"][k] for k in ("bottleneck_dim", "bottleneck_norm") if k in config["head"]}
    model = cls(backbone, {int(k): v for k, v in config["id2label"].items()},
                head_dropout=config["head"].get("dropout", 0.0), method=method, head_options=head_options)
    weights_file = folder / (FULL_WEIGHTS if config["weights"] == "full" else TRAINED_WEIGHTS)
    if not weights_file.is_file():
        raise ForeignFolderError(
            f"{origin!r} lacks {weights_file.name}; the save was incomplete. Save (or push) the model again."
        )
    state = load_state_dict(weights_file)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or (config["weights"] == "full" and missing):
        raise ConfigurationError(
            f"Weights in {weights_file} do not fit the model: missing={missing[:5]} unexpected={unexpected[:5]}."
        )
    return model


def _pretrained_labels(head) -> dict[int, str]:
    names = head.label_names or [f"LABEL_{i}" for i in range(head.weight.shape[0])]
    return dict(enumerate(names))


def _resolve_labels(num_labels: int | None, id2label: dict | None, label2id: dict | None) -> dict[int, str] | None:
    """Validate and merge the three ways of giving labels into one ``id2label``."""
    if num_labels is not None and (not isinstance(num_labels, int) or isinstance(num_labels, bool) or num_labels < 1):
        raise ConfigurationError(f"num_labels must be a positive integer; received {num_labels!r}.")
    if id2label is None and label2id is not None:
        id2label = {int(v): k for k, v in label2id.items()}
    if id2label is not None:
        try:
            id2label = {int(k): str(v) for k, v in dict(id2label).items()}
        except (TypeError, ValueError) as err:
            raise ConfigurationError(f"id2label keys must be integers 0..N-1; received {id2label!r}.") from err
        if sorted(id2label) != list(range(len(id2label))):
            raise ConfigurationError(f"id2label keys must be 0..{len(id2label) - 1}; received {sorted(id2label)}.")
        if len(set(id2label.values())) != len(id2label):
            raise ConfigurationError(f"id2label has duplicate label names: {id2label}.")
        if num_labels is not None and num_labels != len(id2label):
            raise ConfigurationError(
                f"num_labels={num_labels} contradicts id2label with {len(id2label)} entries; pass only one of them "
                "or make them agree."
            )
        if label2id is not None and {k: int(v) for k, v in label2id.items()} != {v: k for k, v in id2label.items()}:
            raise ConfigurationError("label2id is not the inverse of id2label; pass only one of them.")
        return id2label
    if num_labels is not None:
        return {i: f"LABEL_{i}" for i in range(num_labels)}
    return None
