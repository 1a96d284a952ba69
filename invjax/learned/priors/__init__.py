"""Learned priors that enter a :class:`~invjax.Problem`: the convex / weakly convex ridge
regularizer (:class:`ConvexRidge`, with its :class:`LinearSpline` profiles) and any denoiser as
a plug-and-play proximal step (:class:`DenoiserPrior`, alias :data:`PnP`, with the contraction
factors of its convergence statement)."""

from .pnp import DenoiserPrior, PnP, admm_contraction, fbs_contraction, hqs_contraction
from .ridge import ConvexRidge
from .spline import LinearSpline

__all__ = [
    "ConvexRidge",
    "DenoiserPrior",
    "LinearSpline",
    "PnP",
    "admm_contraction",
    "fbs_contraction",
    "hqs_contraction",
]
