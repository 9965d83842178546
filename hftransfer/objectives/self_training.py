"""``self_training``: confidence-thresholded pseudo-labels on the target (FixMatch-style weak/strong views), with
class-wise adaptive thresholds (FlexMatch) and a gate that holds pseudo-labels back while the teacher looks unreliable.

Confident mistakes of a poor teacher feed back into the student (confirmation bias). Two guards:

- adaptive thresholds (FlexMatch, Zhang et al. 2021; FreeMatch, Wang et al. 2023): class ``c``'s threshold is
  ``threshold * M(beta_c)`` with ``M(x) = x / (2 - x)``; ``beta_c``, the class's learning status, is an EMA of the
  share of target samples the teacher confidently puts in ``c``, relative to the best-learnt class (or to the share
  of unconfident samples when that is larger). Rarely confident classes get lower thresholds, never below
  ``min_threshold``.
- a quality gate: the pseudo-label loss is weighted only while the teacher's predictions on the weak and the strong
  view agree often enough and its mean prediction entropy on the target is low enough (EMAs over batches). The log
  says when it holds back and why; ``metrics.json`` (``objective.gate_stats``) records the share of batches gated.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch.nn import functional as F

from hftransfer.objectives.base import (
    STRONG_SUFFIX,
    TEXT_SOURCE_WARMUP,
    Objective,
    ObjectiveConfig,
    ObjectiveOutput,
    all_reduce_sum,
    concat_inputs,
    model_inputs,
)
from hftransfer.objectives.registry import register_objective


logger = logging.getLogger("hftransfer")


@dataclass
class SelfTrainingConfig(ObjectiveConfig):
    threshold: float = field(default=0.95, metadata={"help": "Pseudo-labels count when the teacher's top "
                                                             "probability reaches this (the highest class-wise "
                                                             "threshold with adaptive_threshold)."})
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
    adaptive_threshold: bool = field(
        default=True, metadata={"help": "Class-wise adaptive thresholds (FlexMatch): threshold * M(beta_c), "
                                        "M(x) = x / (2 - x), beta_c the class's learning status (an EMA of the share "
                                        "of confident teacher predictions in class c, relative to the best-learnt "
                                        "class); False: one threshold for all classes."})
    min_threshold: float = field(
        default=0.7, metadata={"help": "Lowest class-wise threshold (capped at threshold)."})
    status_momentum: float = field(
        default=0.99, metadata={"help": "Momentum of the EMA of the classes' learning status."})
    gate_min_agreement: float | None = field(
        default=0.6, metadata={"help": "Quality gate: weight pseudo-labels only while the teacher's arg-max on the "
                                       "weak and on the strong view of a target sample agree on at least this share "
                                       "of samples (EMA); None: no agreement test (also none without a strong "
                                       "view)."})
    gate_max_entropy: float | None = field(
        default=0.5, metadata={"help": "Quality gate: weight pseudo-labels only while the teacher's mean prediction "
                                       "entropy on the target, divided by log(num_labels), is at most this (EMA); "
                                       "None: no entropy test."})
    gate_momentum: float = field(
        default=0.9, metadata={"help": "Momentum of the gate's EMAs of agreement and entropy (the first batch sets "
                                       "them)."})

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"objective.threshold={self.threshold!r} must be a probability in [0, 1].")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"objective.ema_decay={self.ema_decay!r} must be in (0, 1) (e.g. 0.999) or null.")
        if self.weight < 0:
            raise ValueError(f"objective.weight={self.weight!r} must be >= 0.")
        if not 0.0 <= self.min_threshold <= 1.0:
            raise ValueError(f"objective.min_threshold={self.min_threshold!r} must be a probability in [0, 1].")
        for name in ("balance_momentum", "status_momentum", "gate_momentum"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"objective.{name}={value!r} must be in [0, 1) (e.g. 0.9).")
        if self.gate_min_agreement is not None and not 0.0 <= self.gate_min_agreement <= 1.0:
            raise ValueError(f"objective.gate_min_agreement={self.gate_min_agreement!r} must be a share in [0, 1] "
                             "or null (no agreement test).")
        if self.gate_max_entropy is not None and not 0.0 <= self.gate_max_entropy <= 1.0:
            raise ValueError(f"objective.gate_max_entropy={self.gate_max_entropy!r} must be in [0, 1] (entropy "
                             "divided by log(num_labels)) or null (no entropy test).")


def pseudo_labels(teacher_logits: torch.Tensor, threshold: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Arg-max labels of the teacher and the mask of those whose probability reaches ``threshold`` (a number, or a
    tensor of one threshold per class)."""
    probs = teacher_logits.detach().float().softmax(-1)
    confidence, labels = probs.max(-1)
    if isinstance(threshold, torch.Tensor):
        threshold = threshold.to(confidence.device, confidence.dtype)[labels]
    return labels, (confidence >= threshold).float()


def flexmatch_thresholds(status: torch.Tensor, unused: torch.Tensor, threshold: float,
                         min_threshold: float) -> torch.Tensor:
    """Class-wise thresholds ``threshold * M(beta_c)``, ``M(x) = x / (2 - x)``, floored at ``min(min_threshold,
    threshold)``; ``beta_c = status_c / max(max(status), unused)`` (FlexMatch's normalisation with warm-up)."""
    beta = status / torch.maximum(status.max(), unused).clamp(min=1e-12)
    return (threshold * beta / (2.0 - beta)).clamp(min=min(min_threshold, threshold), max=threshold)


def normalised_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-sample prediction entropy divided by log(num_classes): 0 for one-hot, 1 for uniform."""
    logp = logits.detach().float().log_softmax(-1)
    return -(logp.exp() * logp).sum(-1) / math.log(max(logits.shape[-1], 2))


@register_objective("self_training", SelfTrainingConfig,
                    combines_with="any backbone (strong view: images), any method; can start from a saved model",
                    # text has no augmented second view: pseudo-labels are learned on the one (weak) view; a
                    # two-class teacher at ~82% target accuracy has normalised entropy 0.55-0.65 (bench/text_da.py)
                    modality_defaults={"text": {"source_warmup": TEXT_SOURCE_WARMUP, "strong_augment": None,
                                                "gate_max_entropy": 0.7}})
class SelfTraining(Objective):
    """Pseudo-labels (FixMatch: weak view labels, strong view learns), class-wise thresholds, teacher-quality gate.

    The thresholds adapt per class (FlexMatch); the pseudo-label loss counts only while the teacher's weak/strong
    agreement and target entropy pass the gate; an EMA teacher is optional."""

    needs_target = True

    @property
    def target_views(self) -> dict[str, str | None]:  # type: ignore[override]
        return {"weak": None, "strong": self.config.strong_augment} if self.config.strong_augment else {"weak": None}

    def prepare_model(self, model) -> None:
        self.num_labels = model.num_labels
        self.frequency = torch.full((model.num_labels,), 1.0 / model.num_labels)
        # FlexMatch learning status: per-class share of confident predictions, and the unconfident share.
        self.status = torch.full((model.num_labels,), 1.0 / model.num_labels)
        self.unused = torch.zeros(1)
        # Gate: [EMAs initialised, agreement EMA, entropy EMA, open, batches seen, batches gated].
        self.gate = torch.zeros(6)
        self.teacher = None

    def bind(self, modules, model, device) -> None:
        super().bind(modules, model, device)
        self.student = model
        self.frequency, self.status, self.unused = (t.to(device) for t in (self.frequency, self.status, self.unused))
        self.gate = self.gate.to(device)
        if self.config.ema_decay is not None:
            self.teacher = copy.deepcopy(model).to(device).eval()
            self.teacher.requires_grad_(False)

    # --- the loss -------------------------------------------------------------------------------------------------

    def compute_loss(self, model, source, targets, target, info) -> ObjectiveOutput:
        weak = model_inputs(target)
        strong = {k.removesuffix(STRONG_SUFFIX): v for k, v in target.items() if k.endswith(STRONG_SUFFIX)} or None
        n_s, n_t = next(iter(source.values())).shape[0], next(iter(weak.values())).shape[0]
        parts = [source, weak] + ([strong] if strong is not None else [])
        logits = model(**concat_inputs(*parts)).logits
        source_logits, weak_logits = logits[:n_s], logits[n_s:n_s + n_t]
        student_logits = logits[n_s + n_t:] if strong is not None else weak_logits
        if self.teacher is not None:
            with torch.no_grad():
                both = self.teacher(**(concat_inputs(weak, strong) if strong is not None else weak)).logits
            teacher_logits, teacher_strong = both[:n_t], (both[n_t:] if strong is not None else None)
        else:
            teacher_logits, teacher_strong = weak_logits, (student_logits if strong is not None else None)
        thresholds = self.class_thresholds()
        labels, mask = pseudo_labels(teacher_logits, thresholds)
        self._update_status(teacher_logits)
        gate_open, gate_logs = self._update_gate(teacher_logits, teacher_strong, info.step)
        weights = mask
        if self.config.class_balance:
            counts = all_reduce_sum(torch.bincount(labels[mask > 0], minlength=self.num_labels).float())
            if counts.sum() > 0:
                m = self.config.balance_momentum
                self.frequency.mul_(m).add_((1 - m) * counts / counts.sum())
            weights = mask * ((1.0 / self.num_labels) / self.frequency.clamp(min=1e-3))[labels].clamp(max=10.0)
        unlabelled = (F.cross_entropy(student_logits.float(), labels, reduction="none") * weights).mean()
        cls = self.classification_loss(source_logits, targets)
        pseudo_weight = self.config.weight if gate_open else 0.0
        return ObjectiveOutput(cls + pseudo_weight * unlabelled,
                               {"cls_loss": float(cls.detach()), "pseudo_loss": float(unlabelled.detach()),
                                "pseudo_weight": pseudo_weight, "mask_rate": float(mask.mean()),
                                "mean_threshold": float(thresholds.mean()), **gate_logs})

    def class_thresholds(self) -> torch.Tensor:
        """This batch's threshold of each class (all equal to ``threshold`` without ``adaptive_threshold``)."""
        cfg = self.config
        if not cfg.adaptive_threshold:
            return torch.full_like(self.status, cfg.threshold)
        return flexmatch_thresholds(self.status, self.unused, cfg.threshold, cfg.min_threshold)

    @torch.no_grad()
    def _update_status(self, teacher_logits: torch.Tensor) -> None:
        """EMA of the share of target samples the teacher puts in each class with confidence >= ``threshold``."""
        labels, confident = pseudo_labels(teacher_logits, self.config.threshold)
        counts = torch.bincount(labels[confident > 0], minlength=self.num_labels).float()
        totals = all_reduce_sum(torch.cat([counts, (1 - confident).sum().reshape(1), torch.tensor(
            [float(labels.numel())], device=counts.device)]))
        n = totals[-1].clamp(min=1.0)
        m = self.config.status_momentum
        self.status.mul_(m).add_((1 - m) * totals[:self.num_labels] / n)
        self.unused.mul_(m).add_((1 - m) * totals[self.num_labels:self.num_labels + 1] / n)

    @torch.no_grad()
    def _update_gate(self, teacher_weak: torch.Tensor, teacher_strong: torch.Tensor | None,
                     step: int) -> tuple[bool, dict[str, float]]:
        """Update the gate's EMAs with this batch (over all processes); whether pseudo-labels count, and logs."""
        cfg = self.config
        agree = (teacher_weak.argmax(-1) == teacher_strong.argmax(-1)).float().sum() if teacher_strong is not None \
            else torch.zeros((), device=teacher_weak.device)
        sums = all_reduce_sum(torch.stack([agree, normalised_entropy(teacher_weak).sum(),
                                           torch.tensor(float(teacher_weak.shape[0]), device=agree.device)]))
        agreement, entropy = float(sums[0] / sums[2].clamp(min=1)), float(sums[1] / sums[2].clamp(min=1))
        g = self.gate
        if g[0] == 0:
            g[0], g[1], g[2] = 1.0, agreement, entropy
        else:
            m = cfg.gate_momentum
            g[1] = m * g[1] + (1 - m) * agreement
            g[2] = m * g[2] + (1 - m) * entropy
        reasons = self.gate_reasons(teacher_strong is not None)
        was_open, seen = bool(g[3]), int(g[4])
        g[3] = float(not reasons)
        g[4] += 1
        g[5] += float(bool(reasons))
        if reasons and (was_open or seen == 0):
            _log(f"self_training: holding back pseudo-labels from step {step}: {'; '.join(reasons)}")
        elif not reasons and not was_open and seen > 0:
            _log(f"self_training: pseudo-labels weighted again from step {step} (teacher agreement "
                 f"{float(g[1]):.3f}, normalised entropy {float(g[2]):.3f})")
        logs = {"gate_open": float(not reasons), "teacher_entropy": float(g[2]),
                "gated_fraction": float(g[5] / g[4])}
        if teacher_strong is not None:
            logs["teacher_agreement"] = float(g[1])
        return not reasons, logs

    def gate_reasons(self, has_strong_view: bool = True) -> list[str]:
        """Why the gate holds back now (empty: pseudo-labels count)."""
        cfg, g = self.config, self.gate
        reasons = []
        if has_strong_view and cfg.gate_min_agreement is not None and float(g[1]) < cfg.gate_min_agreement:
            reasons.append(f"teacher weak/strong agreement {float(g[1]):.3f} < gate_min_agreement "
                           f"{cfg.gate_min_agreement}")
        if cfg.gate_max_entropy is not None and float(g[2]) > cfg.gate_max_entropy:
            reasons.append(f"teacher normalised target entropy {float(g[2]):.3f} > gate_max_entropy "
                           f"{cfg.gate_max_entropy}")
        return reasons

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

    # --- state and summary ----------------------------------------------------------------------------------------

    def gate_stats(self) -> dict[str, Any]:
        """How often the gate held back (for metrics.json): batches seen and gated, the share gated, last EMAs."""
        g = self.gate
        batches = int(g[4])
        stats = {"batches": batches, "gated_batches": int(g[5]), "gated_fraction": float(g[5]) / max(batches, 1),
                 "open_at_end": bool(g[3]), "teacher_entropy": float(g[2])}
        if "strong" in self.target_views:  # one view (text): no agreement was measured
            stats["teacher_agreement"] = float(g[1])
        return stats

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if hasattr(self, "gate") and int(self.gate[4]) > 0:
            out["gate_stats"] = self.gate_stats()
        return out

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {"frequency": self.frequency.detach().cpu(), "status": self.status.detach().cpu(),
                 "unused": self.unused.detach().cpu(), "gate": self.gate.detach().cpu()}
        if self.teacher is not None:
            state.update({f"teacher.{k}": v.detach().cpu() for k, v in self.teacher.state_dict().items()})
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.frequency.copy_(state["frequency"])
        for name in ("status", "unused", "gate"):  # absent from checkpoints written before the gate existed
            if name in state:
                getattr(self, name).copy_(state[name])
        if self.teacher is not None:
            self.teacher.load_state_dict({k[len("teacher."):]: v for k, v in state.items()
                                          if k.startswith("teacher.")})


def _log(message: str) -> None:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0:
        logger.info(message)
