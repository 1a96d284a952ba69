"""invjax: differentiable inverse problems in JAX."""

from . import functionals, learned, metrics, noise, operators, phantoms, sampling, solvers, tuning
from .solvers import ImplicitAdjoint, Problem, Solution, UnrollAdjoint, solve, solve_batch

__version__ = "0.1.0"

__all__ = [
    "ImplicitAdjoint",
    "Problem",
    "Solution",
    "UnrollAdjoint",
    "functionals",
    "learned",
    "metrics",
    "noise",
    "operators",
    "phantoms",
    "sampling",
    "solve",
    "solve_batch",
    "solvers",
    "tuning",
]
