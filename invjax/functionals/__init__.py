"""Functionals: fidelities, regularizers and constraints with value and proximal map."""

from .base import Functional, Scaled
from .constraints import Box, NonNegative
from .huber import Huber
from .l1 import L1
from .l21 import L21
from .poisson import PoissonLikelihood
from .squared_l2 import SquaredL2
from .tv import TV, TVProxResult

__all__ = [
    "Box",
    "Functional",
    "Huber",
    "L1",
    "L21",
    "NonNegative",
    "PoissonLikelihood",
    "Scaled",
    "SquaredL2",
    "TV",
    "TVProxResult",
]
