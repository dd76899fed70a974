"""occnet: six cameras -> voxel density + class logits, trained by rendering.

The README's names are re-exported here (``occnet.OccupancyNetwork``, ``occnet.Trainer``,
``occnet.predict``). occnet imports only torch and ``kernels``, never ``autolabel``.
"""

from .config import LossConfig, NetworkConfig, RenderConfig, TrainConfig
from .inference import predict
from .metrics import OccupancyMetric
from .network import OccupancyNetwork
from .trainer import Trainer

__all__ = [
    "LossConfig",
    "NetworkConfig",
    "OccupancyMetric",
    "OccupancyNetwork",
    "RenderConfig",
    "TrainConfig",
    "Trainer",
    "predict",
]
