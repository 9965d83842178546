"""What a training objective is: a config dataclass plus a class that turns source (and target) batches into a loss.

Adding an objective = one module with a config and an ``Objective`` subclass, registered with
``@register_objective("name", ConfigClass)``. The engine calls, in order: :meth:`Objective.check_model`,
:meth:`Objective.prepare_model` (before the optimizer exists: add a bottleneck to the head),
:meth:`Objective.trainable_modules` (extra modules such as a domain discriminator: put in the optimizer and prepared
by ``accelerate``), :meth:`Objective.bind` (the prepared modules), then :meth:`Objective.compute_loss` every
micro-batch and :meth:`Objective.after_update` after every optimizer step. :meth:`Objective.state_dict` is saved in
checkpoints so a killed run resumes exactly.

Every objective has a source warm-up (``objective.source_warmup``, a share of the planned optimizer steps): until it
ends the engine trains the plain source loss (:meth:`Objective.warmup_loss`, no target batch drawn or forwarded);
after it :meth:`Objective.compute_loss` sees steps counted from the warm-up's end (:meth:`Objective.adaptation_step`),
so schedules such as DANN's GRL ramp still go from 0 to their maximum. The warm-up is a function of the step, so a
resumed run needs no extra state.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from hftransfer.errors import ConfigurationError
from hftransfer.utils.config_values import coerce_fields


if TYPE_CHECKING:
    from hftransfer.modeling import AutoTransfer



STRONG_SUFFIX = "_strong"  # a target batch's strong-view inputs: pixel_values -> pixel_values_strong
# Text backbones (MiniLM on review domains, issue 22): an adaptation term from the first step cost source and target
# accuracy, so the adaptation objectives register this source warm-up as their text default (bench/text_da.py).
TEXT_SOURCE_WARMUP = 0.5
TEXT_ALIGNMENT_WEIGHT = 0.3  # dann and mmd on text: their terms at weight 1.0 cost source accuracy on MiniLM

@dataclass
class ObjectiveConfig:
    """Base for objective configs (``objective: {name: dann, weight: 1.0, ...}`` in a run config)."""

    weight: float = field(default=1.0, metadata={"help": "Weight of the adaptation loss beside the source loss."})
    source_warmup: float = field(
        default=0.0, metadata={"help": "Share of the planned optimizer steps, in [0, 1), trained on the source loss "
                                       "alone before the adaptation term switches on (no target batches read); "
                                       "schedules such as the GRL ramp start at its end."})

    def __post_init__(self):
        value = self.source_warmup
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value < 1.0):
            raise ConfigurationError(f"objective.source_warmup={value!r} must be a share of the training steps in "
                                     "[0, 1) (e.g. 0.5: the first half trains on the source alone); use 0 for no "
                                     "warm-up.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, objective: str = "") -> ObjectiveConfig:
        data = dict(data or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigurationError(
                f"Unknown option(s) {['objective.' + u for u in unknown]} for objective {objective!r}; valid "
                f"options: {sorted(names)}.")
        return cls(**coerce_fields(cls, data, "objective."))


@dataclass(frozen=True)
class StepInfo:
    """Where the run is: optimizer updates done and planned (schedules such as the GRL warm-up read it)."""

    step: int
    total_steps: int

    @property
    def progress(self) -> float:
        return min(1.0, self.step / max(1, self.total_steps))


def adaptation_start(source_warmup: float, total_steps: int) -> int:
    """The first optimizer step with the adaptation term on: ``source_warmup`` of ``total_steps``, rounded down
    (after rounding away float error: 0.29 of 100 steps is 29, not 28)."""
    return math.floor(round(source_warmup * total_steps, 9))


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor
    logs: dict[str, float] = field(default_factory=dict)


class Objective(abc.ABC):
    """Computes the training loss of one micro-batch.

    ``needs_target``: the objective reads unlabelled target batches (the config must name ``target:``).
    ``target_views``: the image views each target sample carries, view -> augmentation preset (None: the run's
    ``augment``); ``{"weak": None}`` by default, ``"strong"`` adds a second view whose inputs end in
    :data:`STRONG_SUFFIX` (``pixel_values_strong``).
    ``class_weight``: optional per-class weights of the supervised loss (a tensor of ``num_labels``).
    ``label_smoothing``: set by the engine from the run config (hard targets only; mixup targets are already soft).
    ``own_modules``: what :meth:`trainable_modules` returns, in words ("a domain discriminator"; empty: nothing).
    Such modules train in the model's optimizer, which FSDP and DeepSpeed ZeRO build around one model: a sharded run
    refuses the objective before it reads any data (``training.preflight.check_objective_sharding``).
    """

    name: ClassVar[str]
    needs_target: ClassVar[bool] = False
    target_views: ClassVar[dict[str, str | None]] = {"weak": None}
    own_modules: ClassVar[str] = ""

    def __init__(self, config: ObjectiveConfig):
        self.config = config
        self.class_weight: torch.Tensor | None = None
        # Multiplies the class-weighted loss of this process's slice so the processes' mean is the global batch's
        # weighted mean (the engine sets it; 1 on one process or without weights).
        self.weight_share: Callable[[torch.Tensor], torch.Tensor | float] = lambda targets: 1.0
        self.label_smoothing = 0.0

    # --- setup ----------------------------------------------------------------------------------------------------

    def check_model(self, model: AutoTransfer) -> None:
        """Pre-flight: raise ``ConfigurationError`` when this objective cannot train ``model``."""

    def prepare_model(self, model: AutoTransfer) -> None:
        """Change the model before the optimizer is built (e.g. put a bottleneck in its head)."""

    def trainable_modules(self) -> dict[str, nn.Module]:
        """Extra trained modules that are not part of the saved model (a domain discriminator)."""
        return {}

    def bind(self, modules: dict[str, nn.Module], model: AutoTransfer, device: torch.device) -> None:
        """Receive the ``accelerate``-prepared versions of :meth:`trainable_modules` and the unwrapped model."""
        if bool(modules) != bool(self.own_modules):
            raise TypeError(f"objective {self.name!r}: trainable_modules() {sorted(modules)} and own_modules="
                            f"{self.own_modules!r} disagree; set own_modules when the objective trains modules")
        self.modules = modules

    # --- training -------------------------------------------------------------------------------------------------

    def adaptation_step(self, info: StepInfo) -> StepInfo | None:
        """``info`` counted from the end of the source warm-up (``objective.source_warmup``); None during it."""
        start = adaptation_start(self.config.source_warmup, info.total_steps)
        if info.step < start:
            return None
        return StepInfo(info.step - start, info.total_steps - start)

    def warmup_loss(self, model: nn.Module, source: dict[str, torch.Tensor],
                    targets: torch.Tensor) -> ObjectiveOutput:
        """The source classification loss alone (the warm-up's loss): what ``source_only`` trains.

        A one-row source batch (the last of an epoch) cannot be batch-normalised in training mode, which an
        objective's bottleneck does (after the warm-up the target rows join it); its BatchNorm layers then use their
        running statistics for that step.
        """
        rows = next(iter(source.values())).shape[0]
        with running_batchnorm_statistics(model, enabled=rows == 1):
            cls = self.classification_loss(model(**source).logits, targets)
        return ObjectiveOutput(cls, {"cls_loss": float(cls.detach())})

    @abc.abstractmethod
    def compute_loss(self, model: nn.Module, source: dict[str, torch.Tensor], targets: torch.Tensor,
                     target: dict[str, torch.Tensor] | None, info: StepInfo) -> ObjectiveOutput:
        """The loss of a labelled ``source`` batch (``targets``: class ids or soft targets from mixup) and an
        unlabelled ``target`` batch, through ``model`` (the prepared, possibly DDP-wrapped model)."""

    def after_update(self) -> None:
        """Called after every optimizer step (an EMA teacher update)."""

    def module_lr(self, name: str) -> float | None:
        """Learning rate of the extra module ``name`` (None: the head's learning rate)."""
        return None

    # --- state ----------------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors that must survive a kill (extra modules' weights, EMA teacher, running statistics)."""
        return {f"{name}.{k}": v for name, module in self.trainable_modules().items()
                for k, v in module.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, module in self.trainable_modules().items():
            prefix = f"{name}."
            module.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.config.to_dict()}

    # --- shared pieces --------------------------------------------------------------------------------------------

    def classification_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy on class ids (with label smoothing) or on soft targets (mixup: already smoothed), in fp32,
        weighted by ``class_weight`` when set."""
        weight = None if self.class_weight is None else self.class_weight.to(logits.device, torch.float32)
        smoothing = 0.0 if targets.is_floating_point() else self.label_smoothing
        loss = F.cross_entropy(logits.float(), targets, weight=weight, label_smoothing=smoothing)
        return loss if weight is None else loss * self.weight_share(targets)


@contextlib.contextmanager
def running_batchnorm_statistics(model: nn.Module, enabled: bool = True):
    """While inside, the model's training-mode BatchNorm layers normalise with (and keep) their running statistics."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    if not enabled:
        layers = []
    for layer in layers:
        layer.eval()
    try:
        yield
    finally:
        for layer in layers:
            layer.train()


def concat_inputs(first: dict[str, torch.Tensor], *others: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Join input batches along the batch axis for one forward; token tensors are right-padded to one length
    (``input_ids`` with the pad id 0 is masked by ``attention_mask``, so padding never changes a prediction)."""
    batches = (first, *others)
    joined = {}
    for key in first:
        parts = [b[key] for b in batches]
        if parts[0].dim() == 2 and not parts[0].is_floating_point():
            width = max(p.shape[1] for p in parts)
            parts = [F.pad(p, (0, width - p.shape[1])) for p in parts]
        joined[key] = torch.cat(parts)
    return joined


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's inputs of a batch (no labels, no extra views)."""
    return {k: v for k, v in batch.items() if k != "labels" and not k.endswith(STRONG_SUFFIX)}


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        world, rank = dist.get_world_size(), dist.get_rank()
        sizes = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(world)]
        dist.all_gather(sizes, torch.tensor([x.shape[0]], device=x.device))
        sizes = [int(s) for s in sizes]
        padded = F.pad(x.contiguous(), (0, 0) * (x.dim() - 1) + (0, max(sizes) - x.shape[0]))
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded)
        ctx.start, ctx.size, ctx.world = sum(sizes[:rank]), x.shape[0], world
        return torch.cat([p[:n] for p, n in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        # Every process computes the same loss on the same gathered batch, so each holds the full gradient: keep our
        # rows, times world size because DDP then averages parameter gradients over processes.
        return grad[ctx.start:ctx.start + ctx.size] * ctx.world


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All processes' rows of ``x`` (in rank order), differentiable; ``x`` itself on one process.

    Batch-level losses (MMD, CORAL) are then computed on the global batch, so 2 processes optimise what 1 does.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of a (no-grad) tensor over processes; ``x`` on one process."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        x = x.clone()
        dist.all_reduce(x)
    return x
