"""The autoresearch-derived micro-pretraining runner (torch is imported only when training)."""

from stagewise.model_size import count_params
from stagewise.runner.config import TrainConfig, config_sha256
from stagewise.runner.loop import train

__all__ = ["TrainConfig", "config_sha256", "count_params", "train"]
