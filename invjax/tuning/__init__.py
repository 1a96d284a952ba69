"""Parameter selection: bilevel fitting through the solver, discrepancy, GCV, SURE, L-curve, grid."""

from ._common import RuleResult, TuningWarning
from .discrepancy import discrepancy
from .fit import FitHistory, FitResult, fit
from .gcv import gcv, gcv_score
from .grid import GridResult, grid
from .lcurve import lcurve
from .sapg import SapgResult, sapg
from .secant import SecantState, secant
from .sure import RegularizedInverse, SureGrid, probes, regularized_inverse, sure, sure_estimate, sure_grid, sure_risk

__all__ = [
    "FitHistory",
    "FitResult",
    "GridResult",
    "RegularizedInverse",
    "RuleResult",
    "SapgResult",
    "SecantState",
    "SureGrid",
    "TuningWarning",
    "discrepancy",
    "fit",
    "gcv",
    "gcv_score",
    "grid",
    "lcurve",
    "probes",
    "regularized_inverse",
    "sapg",
    "secant",
    "sure",
    "sure_estimate",
    "sure_grid",
    "sure_risk",
]
