"""Landweber iteration: projected gradient descent on a smooth objective."""

import equinox as eqx
import jax
import jax.numpy as jnp

from ._common import smooth_grad, smooth_lipschitz, smooth_regularizer
from .driver import IterativeSolver


class _State(eqx.Module):
    x: jax.Array
    step: jax.Array


class Landweber(IterativeSolver):
    r"""Projected Landweber iteration (Landweber 1951):

    .. math:: x_{k+1} = P_C\big(x_k - \tau\, \nabla \Phi(x_k)\big), \qquad
              \Phi(x) = F(A x; y) + \lambda R(x)

    for a smooth fidelity and a smooth (or no) regulariser; ``P_C`` is the projection onto the
    constraint. ``step_size`` ``tau`` defaults to ``1 / L`` with ``L`` the Lipschitz constant of
    ``grad Phi`` (from ``A.norm()``); an explicit step must satisfy ``0 < tau < 2 / L``.

    Arguments:
        step_size: ``tau`` (``None``: ``1 / L``), ``> 0``.

    Raises:
        ValueError: at construction, a non-positive ``step_size``.
        TypeError: at trace time, a non-smooth fidelity or regularizer.

    Example:
        >>> x = jnp.zeros((16, 16)).at[4:12, 4:12].set(1.0)
        >>> A = ij.operators.Convolution(jnp.ones((3, 3)) / 9, shape=(16, 16))
        >>> problem = ij.Problem(op=A, data=A(x), regularizer=ij.functionals.SquaredL2(), weight=1e-3)
        >>> sol = ij.solve(problem, ij.solvers.Landweber())
        >>> bool(sol.stats.converged), sol.x.shape
        (True, (16, 16))
    """

    step_size: float | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        if self.step_size is not None and not self.step_size > 0:
            raise ValueError(f"Landweber: `step_size` must be > 0, got {self.step_size}")

    def validate(self, problem):
        if not problem.fidelity.smooth:
            raise TypeError(f"Landweber needs a smooth fidelity, got {type(problem.fidelity).__name__}")
        if problem.regularizer is not None and not smooth_regularizer(problem):
            raise TypeError(
                f"Landweber needs a smooth regulariser, got {type(problem.regularizer).__name__}; use FISTA, ADMM or PDHG"
            )

    def init(self, problem, x0):
        lip = smooth_lipschitz(problem, problem.regularizer is not None)
        real = jnp.finfo(x0.dtype).dtype
        if self.step_size is None:
            tau = 1.0 / lip
        else:
            tau = jnp.asarray(self.step_size, real)
            tau = eqx.error_if(tau, tau * lip >= 2 * 1.01, "Landweber: `step_size` must be < 2 / L for convergence")
        return _State(x0, tau.astype(real))

    def _map(self, problem, x, tau):
        x = x - tau * smooth_grad(problem, x, problem.regularizer is not None)
        return x if problem.constraint is None else problem.constraint.prox(x, tau)

    def step(self, problem, state):
        return _State(self._map(problem, state.x, state.step), state.step)

    def refresh(self, problem, state):
        # the step depends on the problem's Lipschitz constant (a smooth regulariser's weight)
        return self.init(problem, state.x)
