"""Iterative solvers on one shared driver; every solve jits, vmaps and differentiates."""

from .adjoint import AbstractAdjoint, ImplicitAdjoint, UnrollAdjoint
from .admm import ADMM
from .batch import solve_batch
from .cg import CG
from .driver import IterativeSolver, Solution, Stats, solve
from .fista import FISTA
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
    "ImplicitAdjoint",
    "IterativeSolver",
    "Landweber",
    "PDHG",
    "Problem",
    "Solution",
    "Stats",
    "Term",
    "UnrollAdjoint",
    "solve",
    "solve_batch",
]
