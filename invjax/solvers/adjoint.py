r"""Derivative policies, passed to a solver as ``adjoint=`` (as optimistix's adjoints).

* :class:`ImplicitAdjoint` (default): the forward solve stops at ``tol``; the derivative of
  ``x*`` comes from the problem's optimality conditions at the returned ``x``
  (:mod:`invjax.solvers.implicit`): one linear solve per derivative
  (:mod:`invjax.solvers.linear`), memory constant in the iterations, forward and reverse mode.
* :class:`UnrollAdjoint`: the derivative of the iterations actually run, by differentiating
  through them. The loop stops at convergence (the blocks after it are skipped, and their
  derivative is the identity); ``checkpoints`` states are stored and the segments between them
  recomputed in the backward pass. Forward and reverse mode.

``diff="implicit"`` / ``diff="unroll"`` on a solver is shorthand for ``adjoint=ImplicitAdjoint()``
/ ``adjoint=UnrollAdjoint()``.

Example:
    >>> solver = ij.solvers.ADMM(max_iters=300, adjoint=ij.solvers.ImplicitAdjoint(tol=1e-3))
    >>> solver = ij.solvers.FISTA(max_iters=200, adjoint=ij.solvers.UnrollAdjoint(checkpoints=10))
"""

from __future__ import annotations

import math
from typing import ClassVar

import equinox as eqx

_FAILURES = ("raise", "nan", "ignore")


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


class AbstractAdjoint(eqx.Module):
    """How a solve is differentiated (see :mod:`invjax.solvers.adjoint`): the base of
    :class:`ImplicitAdjoint` and :class:`UnrollAdjoint`, the two policies a solver accepts as
    ``adjoint=``.

    Arguments:
        kind: not passed: a class attribute each policy sets, ``"implicit"`` or ``"unroll"``
            (what ``solver.diff`` reads).

    Example:
        >>> solver = ij.solvers.FISTA(diff="unroll")
        >>> isinstance(solver.adjoint, ij.solvers.AbstractAdjoint), solver.adjoint.kind, solver.diff
        (True, 'unroll', 'unroll')
        >>> ij.solvers.ImplicitAdjoint().kind
        'implicit'
    """

    kind: eqx.AbstractClassVar[str]


class ImplicitAdjoint(AbstractAdjoint):
    """Implicit derivatives from the problem's optimality conditions at the solution.

    All arguments are keyword-only.

    Arguments:
        tol: relative residual of the linear solve of each derivative (default ``None``:
            ``1e-2`` in single precision, ``1e-6`` in double; measured on 256² TV deblurring, the
            gradient at ``1e-2`` differs from the one at ``1e-4`` by 0.1 %, far less than the
            error of the solve it differentiates).
        max_iters: its iteration limit (default 1000).
        failure: what a derivative solve that stops above ``10 * tol`` does: ``"raise"``
            (default; ``equinox.EquinoxRuntimeError`` at run time), ``"nan"`` (NaN derivatives, for
            callers that treat them as a failed evaluation, as the tuning rules do) or
            ``"ignore"`` (the last iterate).
        flat: an entry of a non-smooth term ``g(K x)`` whose modulus is below ``flat`` times the
            solve's final stopping residual times ``max |K x|`` counts as an exact zero
            (default 1; see :mod:`invjax.solvers.implicit`).
        curvature_cap: the curvature of a non-smooth term on its manifold (``c / |u|`` for a
            norm) is capped at this multiple of the smooth part's mean curvature (default 1e5).

    Raises:
        ValueError: at construction, a ``tol`` outside ``(0, 1)``, a ``max_iters`` below 1, an
            unknown ``failure``, a negative ``flat`` or a non-positive ``curvature_cap``.

    Example:
        For ``min ||x - y||^2 / 2 + w ||x||^2 / 2`` the solution is ``y / (1 + w)``, so
        ``d sum(x) / dw = -sum(y) / (1 + w)^2`` (= -4 for 16 ones at ``w = 1``):

        >>> A = ij.operators.Identity((4, 4))
        >>> solver = ij.solvers.FISTA(adjoint=ij.ImplicitAdjoint(tol=1e-4))
        >>> def total(w):
        ...     problem = ij.Problem(op=A, data=jnp.ones((4, 4)), regularizer=ij.functionals.SquaredL2(), weight=w)
        ...     return ij.solve(problem, solver).x.sum()
        >>> round(float(jax.grad(total)(1.0)), 3)
        -4.0
    """

    kind: ClassVar[str] = "implicit"
    tol: float | None = eqx.field(static=True, default=None, kw_only=True)
    max_iters: int = eqx.field(static=True, default=1000, kw_only=True)
    failure: str = eqx.field(static=True, default="raise", kw_only=True)
    flat: float = eqx.field(static=True, default=1.0, kw_only=True)
    curvature_cap: float = eqx.field(static=True, default=1e5, kw_only=True)

    def __check_init__(self):
        who = "ImplicitAdjoint"
        if self.tol is not None and not (isinstance(self.tol, (int, float)) and 0 < self.tol < 1):
            raise ValueError(f"{who}: `tol` (adjoint_tol) must be None or a number in (0, 1), got {self.tol!r}")
        if not _positive_int(self.max_iters):
            raise ValueError(f"{who}: `max_iters` (adjoint_iters) must be an int >= 1, got {self.max_iters!r}")
        if self.failure not in _FAILURES:
            raise ValueError(f"{who}: `failure` (adjoint_failure) must be one of {_FAILURES}, got {self.failure!r}")
        if not (isinstance(self.flat, (int, float)) and self.flat >= 0):
            raise ValueError(f"{who}: `flat` (adjoint_flat) must be a number >= 0, got {self.flat!r}")
        if not (isinstance(self.curvature_cap, (int, float)) and self.curvature_cap > 0):
            raise ValueError(f"{who}: `curvature_cap` (adjoint_curvature_cap) must be a number > 0, got {self.curvature_cap!r}")

    def resolved_tol(self, eps: float) -> float:
        """``tol``, or its default for a dtype of machine epsilon ``eps``."""
        if self.tol is not None:
            return float(self.tol)
        return 1e-2 if eps > 1e-10 else 1e-6


class UnrollAdjoint(AbstractAdjoint):
    """Backpropagation (or forward mode) through the iterations, stopping at convergence.

    All arguments are keyword-only.

    Arguments:
        checkpoints: solver states stored for the backward pass (default ``None``: about
            ``sqrt(max_iters / check_every)``); the iterations between two are recomputed, so
            memory is ``~ checkpoints + max_iters / checkpoints`` states. A number at least the
            number of residual checks (``max_iters / check_every``) stores every block: no
            recomputation.

    Raises:
        ValueError: at construction, ``checkpoints`` neither ``None`` nor an int >= 1.

    Example:
        The same derivative as :class:`ImplicitAdjoint`'s example, by differentiating the
        iterations:

        >>> A = ij.operators.Identity((4, 4))
        >>> solver = ij.solvers.FISTA(adjoint=ij.UnrollAdjoint(checkpoints=4))
        >>> def total(w):
        ...     problem = ij.Problem(op=A, data=jnp.ones((4, 4)), regularizer=ij.functionals.SquaredL2(), weight=w)
        ...     return ij.solve(problem, solver).x.sum()
        >>> round(float(jax.grad(total)(1.0)), 3)
        -4.0
    """

    kind: ClassVar[str] = "unroll"
    checkpoints: int | None = eqx.field(static=True, default=None, kw_only=True)

    def __check_init__(self):
        if self.checkpoints is not None and not _positive_int(self.checkpoints):
            raise ValueError(f"UnrollAdjoint: `checkpoints` must be None or an int >= 1, got {self.checkpoints!r}")

    def segment_blocks(self, blocks: int) -> int:
        """Blocks (of ``check_every`` iterations) per rematerialised segment; 0: none."""
        if blocks <= 1:
            return 0
        n = self.checkpoints if self.checkpoints is not None else max(1, math.isqrt(blocks))
        if n >= blocks:
            return 0
        return math.ceil(blocks / n)
