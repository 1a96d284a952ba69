"""invjax: differentiable inverse problems in JAX."""

from . import functionals, learned, metrics, noise, operators, phantoms, solvers, tuning
from .solvers import Problem, Solution, solve, solve_batch

__version__ = "0.1.0"

__all__ = [
    "Problem",
    "Solution",
    "functionals",
    "learned",
    "metrics",
    "noise",
    "operators",
    "phantoms",
    "solve",
    "solve_batch",
    "solvers",
    "tuning",
]
