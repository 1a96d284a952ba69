"""Iterative solvers on one shared driver; every solve jits, vmaps and differentiates."""

from .admm import ADMM
from .batch import solve_batch
from .cg import CG
from .driver import IterativeSolver, Solution, Stats, solve
from .fista import FISTA
from .landweber import Landweber
from .pdhg import PDHG
from .problem import Problem

__all__ = ["ADMM", "CG", "FISTA", "IterativeSolver", "Landweber", "PDHG", "Problem", "Solution", "Stats", "solve", "solve_batch"]
