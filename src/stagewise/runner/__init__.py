"""The autoresearch-derived micro-pretraining runner (torch is imported only when training)."""

from stagewise.runner.config import TrainConfig, config_sha256
from stagewise.runner.loop import train
from stagewise.runner.params import count_params

__all__ = ["TrainConfig", "config_sha256", "count_params", "train"]
