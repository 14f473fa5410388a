"""`sml train`: the published SML training recipe (and ERFNet), on one process or many.

Public names: :class:`TrainConfig`, :func:`load_config`, :func:`train`,
:func:`evaluate_miou`, :func:`packaged_configs`.
"""
from __future__ import annotations

from sml.train.config import TrainConfig, load_config, packaged_configs
from sml.train.evaluate import evaluate_miou
from sml.train.loop import train
from sml.train.network import build_network

__all__ = ["TrainConfig", "load_config", "packaged_configs", "train", "evaluate_miou", "build_network"]
