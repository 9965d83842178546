"""The training engine: config, loop, checkpoints."""

from hftransfer.training.callbacks import Callback
from hftransfer.training.config import ModelConfig, OptimConfig, SchedulerConfig, TrainConfig, UnfreezeStage
from hftransfer.training.engine import TrainResult, TransferTrainer, train
from hftransfer.training.state import TrainState


__all__ = ["Callback", "ModelConfig", "OptimConfig", "SchedulerConfig", "TrainConfig", "TrainResult",
           "TrainState", "TransferTrainer", "UnfreezeStage", "train"]
