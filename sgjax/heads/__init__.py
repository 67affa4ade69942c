"""Heads: what the network's output means, the loss that trains it, and the
posterior summary it gives at inference."""

from ._classifier import Classifier as Classifier
from ._density import Gaussian as Gaussian, MixtureDensity as MixtureDensity
from ._flow import Flow as Flow
from ._point import Point as Point
from ._quantile import Quantile as Quantile
from .base import AbstractHead as AbstractHead, head_from_config as head_from_config
