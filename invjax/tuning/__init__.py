"""Parameter selection without ground truth: discrepancy principle and GCV.

(Bilevel ``fit``, ``sure``, ``lcurve`` and ``grid`` are in progress: see the issue note.)
"""

from ._common import RuleInfo, TuningWarning
from .discrepancy import discrepancy
from .gcv import gcv, gcv_score

__all__ = ["RuleInfo", "TuningWarning", "discrepancy", "gcv", "gcv_score"]
