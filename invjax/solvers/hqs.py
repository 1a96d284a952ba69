r"""Half-quadratic splitting with a fixed penalty: the plug-and-play solver PnP-HQS.

Geman & Yang, "Nonlinear image recovery with half-quadratic regularization", IEEE TIP 1995;
Zhang, Zuo, Gu & Zhang, "Learning deep CNN denoiser prior for image restoration", CVPR 2017.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from .admm import ADMM
from .driver import relative_change

__all__ = ["HQS"]


class HQS(ADMM):
    r"""Half-quadratic splitting (Geman & Yang, IEEE TIP 1995), the PnP-HQS of Zhang et al.
    ("Learning deep CNN denoiser prior for image restoration", CVPR 2017), with fixed ``rho``:

    .. math:: x_{k+1} = \arg\min_x \tfrac12\|A x - y\|^2 + \tfrac\rho2 \|x - z_k\|^2, \qquad
              z_{k+1} = \operatorname{prox}_{w R / \rho}(x_{k+1})
              \;(= D(x_{k+1}, \sqrt{w/\rho}) \text{ for a denoiser prior}).

    This is :class:`~invjax.solvers.ADMM` without the dual update (relaxation 1, ``u = 0``), and
    shares its x-step (FFT or preconditioned CG) and settings; ``rho`` must be given, and the
    penalty never adapts (``adapt_iters`` is ignored). It minimises the relaxed objective
    ``½||A x - y||² + w R(z) + (rho/2)||x - z||²``, not the problem's own, so it accepts only a
    plug-and-play regulariser (:class:`~invjax.learned.DenoiserPrior`, which declares
    ``plug_and_play = True``) with a scalar weight, the fidelity ``½||A x - y||²`` and no
    constraint (for a convex regulariser use ADMM). Stops when the relative change of ``z``
    falls below ``tol``. With a denoiser whose residual is ``eps``-Lipschitz and
    ``A^T A >= mu I`` it converges linearly when
    :func:`~invjax.learned.hqs_contraction` ``< 1``. Implicit derivatives are not available
    (``diff="unroll"``).

    Arguments:
        rho: the penalty, ``> 0`` (required).
        cg_iters, cg_tol, max_iters, tol, check_every, diff: as for :class:`~invjax.solvers.ADMM`
            (and its other settings likewise).

    Raises:
        ValueError: ``rho`` not given (at construction).
        TypeError: at solve time, a regulariser that is not plug-and-play, a constraint, a
            weighted fidelity or a non-scalar weight.

    Example:
        >>> A = ij.operators.Convolution(jnp.ones((3, 3)) / 9, (16, 16))
        >>> prior = ij.learned.DenoiserPrior(lambda v, sigma: v)    # the identity "denoiser"
        >>> sol = ij.solve(ij.Problem(A, A(jnp.ones((16, 16))), prior, weight=0.01), ij.solvers.HQS(rho=1.0))
        >>> bool(sol.stats.converged)
        True
    """

    def __check_init__(self):
        if self.rho is None:
            raise ValueError("HQS: `rho` must be given (a number > 0), got None")

    def validate(self, problem):
        if not problem.scalar_weight:
            raise TypeError(f"HQS needs a scalar `weight`, got shape {problem.weight.shape}")
        if not self._split(problem)[0]:
            raise TypeError(f"HQS needs the fidelity SquaredL2() (unweighted), got {type(problem.fidelity).__name__}")
        if not getattr(problem.regularizer, "plug_and_play", False) or problem.constraint is not None:
            reg = type(problem.regularizer).__name__
            raise TypeError(
                f"HQS needs a DenoiserPrior regulariser and no constraint, got regulariser {reg} and constraint "
                f"{type(problem.constraint).__name__}: it solves a relaxed problem (use ADMM)"
            )
        super().validate(problem)

    def step(self, problem, state):
        _, terms = self._split(problem)
        zero = tuple(jnp.zeros_like(z) for z in state.z)
        x, k = self._x_step(problem, state.z, zero, state.rho, state.x, state.consts)
        z = tuple(t.func.prox(t.op.mv(x), 1 / state.rho) for _, t in terms)
        return dataclasses.replace(state, x=x, z=z, k=state.k + 1, inner=state.inner + k)

    def checked_step(self, problem, state):
        new = self.step(problem, state)
        return new, relative_change(new.z, state.z)
