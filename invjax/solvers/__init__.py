"""Iterative solvers on one shared driver; every solve jits, vmaps and differentiates."""

from .adjoint import AbstractAdjoint, ImplicitAdjoint, UnrollAdjoint
from .admm import ADMM
from .batch import solve_batch
from .cg import CG
from .driver import IterativeSolver, Solution, Stats, solve
from .fista import FISTA
from .fixed_point import FixedPointStats, anderson, fixed_point
from .hqs import HQS
from .landweber import Landweber
from .pdhg import PDHG
from .implicit import Dual
from .problem import Problem, Term

__all__ = [
    "ADMM",
    "AbstractAdjoint",
    "CG",
    "Dual",
    "FISTA",
    "FixedPointStats",
    "HQS",
    "ImplicitAdjoint",
    "IterativeSolver",
    "Landweber",
    "PDHG",
    "Problem",
    "Solution",
    "Stats",
    "Term",
    "UnrollAdjoint",
    "anderson",
    "fixed_point",
    "solve",
    "solve_batch",
]
