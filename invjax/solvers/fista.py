"""FISTA: proximal gradient with Nesterov momentum."""

import equinox as eqx
import jax
import jax.numpy as jnp

from ._common import smooth_grad, smooth_lipschitz, smooth_regularizer
from .driver import FixedPointOnX


class _State(eqx.Module):
    x: jax.Array
    y: jax.Array
    t: jax.Array
    step: jax.Array


class FISTA(FixedPointOnX):
    r"""Fast iterative shrinkage-thresholding (Beck & Teboulle, SIAM J. Imaging Sci. 2009).

    For ``Phi(x) = f(x) + g(x)`` with ``f = F(A x; y)`` smooth (plus a smooth regulariser) and
    ``g`` the non-smooth part with a prox (``lambda R`` or the constraint):

    .. math:: x_{k+1} = \operatorname{prox}_{\tau g}\big(y_k - \tau \nabla f(y_k)\big),\quad
              t_{k+1} = \tfrac{1 + \sqrt{1 + 4 t_k^2}}{2},\quad
              y_{k+1} = x_{k+1} + \tfrac{t_k - 1}{t_{k+1}} (x_{k+1} - x_k).

    ``TV`` is handled through its own prox (a dual FGP solve to ``TV.tol``, Beck & Teboulle
    2009b). A non-smooth regulariser together with a constraint has no exact prox here: use
    ADMM or PDHG. The implicit gradient differentiates the fixed point of the plain
    proximal-gradient map ``x = prox_{tau g}(x - tau grad f(x))``.

    Args:
        step_size: ``tau`` (``None``: ``1 / L`` from ``A.norm()``); must be ``< 2 / L``... and
            ``<= 1 / L`` for the FISTA rate.
        backtracking: shrink ``tau`` by ``eta`` until the sufficient-decrease condition holds
            (needs no ``L``; ``step_size`` is then the starting step).
        eta: backtracking factor in (0, 1).
    """

    step_size: float | None = eqx.field(static=True, default=None)
    backtracking: bool = eqx.field(static=True, default=False)
    eta: float = eqx.field(static=True, default=0.5)

    def validate(self, problem):
        if not problem.fidelity.smooth:
            raise TypeError(f"FISTA needs a smooth fidelity, got {type(problem.fidelity).__name__}; use PDHG or ADMM")
        nonsmooth_reg = problem.regularizer is not None and not smooth_regularizer(problem)
        if nonsmooth_reg and problem.constraint is not None:
            raise TypeError("FISTA: a non-smooth regulariser with a constraint has no exact prox; use ADMM or PDHG")
        if nonsmooth_reg and not problem.scalar_weight:
            raise TypeError("FISTA needs a scalar `weight` for a non-smooth regulariser; use ADMM or PDHG")
        if self.step_size is not None and self.step_size <= 0:
            raise ValueError(f"FISTA: `step_size` must be > 0, got {self.step_size}")
        if not 0 < self.eta < 1:
            raise ValueError(f"FISTA: `eta` must be in (0, 1), got {self.eta}")

    # f: smooth part, g: prox part
    def _smooth_reg(self, problem):
        return problem.regularizer is not None and smooth_regularizer(problem)

    def _f(self, problem, x):
        val = problem.data_fidelity(problem.op.mv(x))
        return val + problem.regularization(x) if self._smooth_reg(problem) else val

    def _grad(self, problem, x):
        return smooth_grad(problem, x, self._smooth_reg(problem))

    def _prox(self, problem, v, tau):
        if problem.regularizer is not None and not self._smooth_reg(problem):
            return problem.regularizer.prox(v, tau * problem.weight.astype(tau.dtype))
        if problem.constraint is not None:
            return problem.constraint.prox(v, tau)
        return v

    def _map(self, problem, y, tau):
        return self._prox(problem, y - tau * self._grad(problem, y), tau)

    def init(self, problem, x0):
        real = jnp.finfo(x0.dtype).dtype
        if self.step_size is None:
            tau = (1.0 / smooth_lipschitz(problem, self._smooth_reg(problem))).astype(real)
        else:
            tau = jnp.asarray(self.step_size, real)
            if not self.backtracking:
                lip = smooth_lipschitz(problem, self._smooth_reg(problem))
                tau = eqx.error_if(tau, tau * lip >= 2 * 1.01, "FISTA: `step_size` must be < 2 / L for convergence")
        return _State(x0, x0, jnp.ones((), real), tau)

    def _backtrack(self, problem, y, tau):
        """Largest ``tau * eta^j`` with ``f(p) <= f(y) + <grad f(y), p - y> + ||p - y||² / (2 tau)``."""
        y = jax.lax.stop_gradient(y)
        fy, gy = self._f(problem, y), self._grad(problem, y)

        def bad(tau):
            p = self._prox(problem, y - tau * gy, tau)
            d = p - y
            quad = fy + jnp.real(jnp.vdot(gy, d)) + jnp.sum(jnp.abs(d) ** 2) / (2 * tau)
            return self._f(problem, p) > quad * (1 + 10 * jnp.finfo(tau.dtype).eps)

        def cond(c):
            tau, j = c
            return bad(tau) & (j < 60)

        tau, _ = jax.lax.while_loop(cond, lambda c: (c[0] * self.eta, c[1] + 1), (tau, 0))
        return jax.lax.stop_gradient(tau)

    def step(self, problem, state):
        tau = self._backtrack(problem, state.y, state.step) if self.backtracking else state.step
        x = self._map(problem, state.y, tau)
        t = (1 + jnp.sqrt(1 + 4 * state.t**2)) / 2
        y = x + ((state.t - 1) / t).astype(x.real.dtype) * (x - state.x)
        return _State(x, y, t, tau)
