"""``self_training``: confidence-thresholded pseudo-labels on the target (FixMatch-style weak/strong views)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from hftransfer.objectives.base import (
    Objective,
    ObjectiveConfig,
    ObjectiveOutput,
    all_reduce_sum,
    concat_inputs,
    model_inputs,
)
from hftransfer.objectives.registry import register_objective


@dataclass
class SelfTrainingConfig(ObjectiveConfig):
    threshold: float = field(default=0.95, metadata={"help": "Pseudo-labels count when the teacher's top "
                                                             "probability reaches this."})
    strong_augment: str | None = field(
        default="randaugment", metadata={"help": "Image augmentation preset of the strong target view (the student "
                                                 "learns the weak view's pseudo-label on it); None: one view."})
    ema_decay: float | None = field(
        default=None, metadata={"help": "Pseudo-labels from an EMA teacher with this decay (e.g. 0.999); None: "
                                        "from the model itself on the weak view."})
    class_balance: bool = field(
        default=False, metadata={"help": "Weight pseudo-labelled samples by the inverse of a running pseudo-label "
                                         "class frequency (keeps rare target classes from vanishing)."})
    balance_momentum: float = field(default=0.99, metadata={"help": "Momentum of that running frequency."})

    def __post_init__(self):
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"objective.threshold={self.threshold!r} must be a probability in [0, 1].")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"objective.ema_decay={self.ema_decay!r} must be in (0, 1) (e.g. 0.999) or null.")
        if self.weight < 0:
            raise ValueError(f"objective.weight={self.weight!r} must be >= 0.")


def pseudo_labels(teacher_logits: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Arg-max labels of the teacher and the mask of those whose probability reaches ``threshold``."""
    probs = teacher_logits.detach().float().softmax(-1)
    confidence, labels = probs.max(-1)
    return labels, (confidence >= threshold).float()


@register_objective("self_training", SelfTrainingConfig,
                    combines_with="any backbone (strong view: images), any method; can start from a saved model")
class SelfTraining(Objective):
    """Pseudo-labels above a confidence threshold; weak view labels, strong view learns (FixMatch); EMA optional."""

    needs_target = True

    @property
    def target_views(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("weak", "strong") if self.config.strong_augment else ("weak",)

    def prepare_model(self, model) -> None:
        self.num_labels = model.num_labels
        self.frequency = torch.full((model.num_labels,), 1.0 / model.num_labels)
        self.teacher = None

    def bind(self, modules, model, device) -> None:
        super().bind(modules, model, device)
        self.student = model
        self.frequency = self.frequency.to(device)
        if self.config.ema_decay is not None:
            self.teacher = copy.deepcopy(model).to(device).eval()
            self.teacher.requires_grad_(False)

    def compute_loss(self, model, source, targets, target, info) -> ObjectiveOutput:
        weak = model_inputs(target)
        strong = {k[: -len("_strong")]: v for k, v in target.items() if k.endswith("_strong")} or None
        n_s, n_t = next(iter(source.values())).shape[0], next(iter(weak.values())).shape[0]
        parts = [source, weak] + ([strong] if strong is not None else [])
        logits = model(**concat_inputs(*parts)).logits
        source_logits, weak_logits = logits[:n_s], logits[n_s:n_s + n_t]
        student_logits = logits[n_s + n_t:] if strong is not None else weak_logits
        if self.teacher is not None:
            with torch.no_grad():
                teacher_logits = self.teacher(**weak).logits
        else:
            teacher_logits = weak_logits
        labels, mask = pseudo_labels(teacher_logits, self.config.threshold)
        weights = mask
        if self.config.class_balance:
            counts = all_reduce_sum(torch.bincount(labels[mask > 0], minlength=self.num_labels).float())
            if counts.sum() > 0:
                m = self.config.balance_momentum
                self.frequency.mul_(m).add_((1 - m) * counts / counts.sum())
            weights = mask * ((1.0 / self.num_labels) / self.frequency.clamp(min=1e-3))[labels].clamp(max=10.0)
        unlabelled = (F.cross_entropy(student_logits.float(), labels, reduction="none") * weights).mean()
        cls = self.classification_loss(source_logits, targets)
        return ObjectiveOutput(cls + self.config.weight * unlabelled,
                               {"cls_loss": float(cls.detach()), "pseudo_loss": float(unlabelled.detach()),
                                "mask_rate": float(mask.mean())})

    @torch.no_grad()
    def after_update(self) -> None:
        if self.teacher is None:
            return
        decay = self.config.ema_decay
        student = dict(self.student.state_dict())
        for name, value in self.teacher.state_dict().items():
            source = student[name]
            if value.is_floating_point():
                value.mul_(decay).add_(source.to(value.dtype), alpha=1 - decay)
            else:
                value.copy_(source)

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {"frequency": self.frequency.detach().cpu()}
        if self.teacher is not None:
            state.update({f"teacher.{k}": v.detach().cpu() for k, v in self.teacher.state_dict().items()})
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.frequency.copy_(state["frequency"])
        if self.teacher is not None:
            self.teacher.load_state_dict({k[len("teacher."):]: v for k, v in state.items()
                                          if k.startswith("teacher.")})
