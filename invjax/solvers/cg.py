"""Conjugate gradients on the normal equations of a quadratic (Tikhonov) problem."""

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from ._common import is_quadratic, smooth_grad
from .driver import IterativeSolver
from .linear import CGState, cg_init, cg_step


class _CGState(eqx.Module):
    b: jax.Array
    cg: CGState
    bnorm: jax.Array

    @property
    def x(self):
        return self.cg.x


class CG(IterativeSolver):
    r"""Conjugate gradients for quadratic problems (Hestenes & Stiefel 1952).

    Solves the normal equations of

    .. math:: \min_x \tfrac12\|W^{1/2}(A x - y)\|^2 + \lambda\, \tfrac12 \|V^{1/2}(K x - d)\|^2 ,
    .. math:: (A^H W A + \lambda K^H V K)\, x = A^H W y + \lambda K^H V d ,

    i.e. a ``SquaredL2`` fidelity with a ``SquaredL2`` regulariser (``K`` the identity, or the
    regulariser's own operator) and no constraint. The matrix is applied matrix-free, as a JVP of
    the gradient. It stops on its own residual ``||b - H x|| / ||b||`` alone, once it is below
    ``tol`` (checked every ``check_every`` iterations, default 1 here, since a CG iteration is
    cheap next to its residual): unlike the other solvers (:mod:`invjax.solvers.driver`) it does
    not also wait for the change of ``x`` to settle, which past the attainable float32 accuracy
    it does not (``stops_on_change = False``).

    Each iteration is the library's one CG step (:func:`invjax.solvers.linear.cg_step`, shared
    with every linear solve): the residual is recomputed as ``b - H x`` every ``stabilise_every``
    iterations (the recurrence drifts in finite precision and could report a residual the
    iterate does not have), and once it reaches rounding level the iteration stops moving (a
    ``tol`` below rounding runs to ``max_iters`` and is reported as not converged, with a finite
    unrolled derivative).

    Arguments:
        tol: the stopping tolerance (default ``1e-6``; see above).
        check_every: iterations between checks of the stopping residual (default 1).
        stabilise_every: recompute the residual as ``b - H x`` every this many iterations
            (int ``>= 1``, default 10).
        max_iters, adjoint, diff: as for every solver (:class:`~invjax.solvers.IterativeSolver`).

    Raises:
        ValueError: at construction, a ``stabilise_every`` that is not an int ``>= 1`` (or a
            common setting out of range, see :class:`~invjax.solvers.IterativeSolver`).
        TypeError: at solve time, a fidelity or regulariser that is not ``SquaredL2``, or a
            constraint.

    Example:
        Tikhonov deblurring; at the solution the gradient ``A^T (A x - y) + lam x`` vanishes:

        >>> A = ij.operators.Convolution(jnp.ones((3, 3)) / 9, (16, 16))
        >>> y = A(ij.phantoms.shepp_logan(16))
        >>> problem = ij.Problem(A, y, ij.functionals.SquaredL2(), weight=1e-2)
        >>> sol = ij.solve(problem, ij.solvers.CG(max_iters=200, tol=1e-6))
        >>> bool(sol.stats.converged)
        True
        >>> gradient = A.T(A(sol.x) - y) + 1e-2 * sol.x
        >>> bool(jnp.linalg.norm(gradient) <= 1e-5 * jnp.linalg.norm(A.T(y)))
        True
    """

    stops_on_change: ClassVar[bool] = False
    tol: float = eqx.field(static=True, default=1e-6, kw_only=True)
    check_every: int = eqx.field(static=True, default=1, kw_only=True)
    stabilise_every: int = eqx.field(static=True, default=10, kw_only=True)

    def __check_init__(self):
        if not (isinstance(self.stabilise_every, int) and self.stabilise_every >= 1):
            raise ValueError(f"CG: `stabilise_every` must be an int >= 1, got {self.stabilise_every!r}")

    def validate(self, problem):
        if not is_quadratic(problem.fidelity):
            raise TypeError(f"CG needs a SquaredL2 fidelity, got {type(problem.fidelity).__name__}")
        if problem.regularizer is not None and not is_quadratic(problem.split_regularizer()[1]):
            raise TypeError(
                f"CG needs a quadratic (SquaredL2) regulariser, got {type(problem.regularizer).__name__}; "
                "use FISTA, ADMM or PDHG"
            )
        if problem.constraint is not None:
            raise TypeError(f"CG cannot handle the constraint {type(problem.constraint).__name__}; use FISTA, ADMM or PDHG")

    def _grad(self, problem, x):
        return smooth_grad(problem, x, with_regularizer=problem.regularizer is not None)

    def _matvec(self, problem, x):
        # H x: the linear part of the affine gradient, by a JVP. (Not grad(x) - grad(0): that
        # difference carries an absolute rounding error of eps ||A^H y||, which swamps H p once the
        # search direction p is small; measured in float32 on 128² Tikhonov deblurring: the error
        # to the closed form grew from 2% to 42% between iterations 50 and 3000.)
        return jax.jvp(lambda v: self._grad(problem, v), (jnp.zeros_like(x),), (x,))[1]

    def init(self, problem, x0):
        b = -self._grad(problem, jnp.zeros_like(x0))
        return _CGState(b, cg_init(lambda v: self._matvec(problem, v), b, x0), jnp.linalg.norm(b))

    def step(self, problem, state):
        new = cg_step(lambda v: self._matvec(problem, v), state.b, state.cg, stabilise_every=self.stabilise_every)
        return _CGState(state.b, new, state.bnorm)

    def residual(self, problem, old, new):
        # rr can be exactly 0: a square root only of a positive number (its derivative at 0 is inf)
        rr = new.cg.rr
        return jnp.where(rr > 0, jnp.sqrt(jnp.where(rr > 0, rr, 1)), 0) / jnp.maximum(new.bnorm, jnp.finfo(new.bnorm.dtype).tiny)

    def refresh(self, problem, state):
        # the residual and search direction belong to the old system: restart them at the old x
        return self.init(problem, state.x)
