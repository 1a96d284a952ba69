"""PDHG (Chambolle–Pock) with adaptive primal/dual step balancing."""

import equinox as eqx
import jax
import jax.numpy as jnp

from ._common import ratio, split_terms, stacked_norm
from .driver import IterativeSolver


class _State(eqx.Module):
    x: jax.Array
    p: tuple
    tau: jax.Array
    sigma: jax.Array
    alpha: jax.Array
    res: jax.Array
    k: jax.Array


def _norm(tree):
    return jnp.sqrt(sum(jnp.sum(jnp.abs(a) ** 2) for a in jax.tree_util.tree_leaves(tree)))


class PDHG(IterativeSolver):
    r"""Primal-dual hybrid gradient (Chambolle & Pock, J. Math. Imaging Vis. 2011).

    For ``min_x sum_i h_i(K_i x) + G(x)`` (the fidelity ``F(A x; y)``, the regulariser
    ``g(K x)`` as dual terms; the constraint as ``G``):

    .. math::
        x^+ &= \operatorname{prox}_{\tau G}\big(x - \tau \textstyle\sum_i K_i^H p_i\big), \quad
        \bar x = 2 x^+ - x, \\
        p_i^+ &= \operatorname{prox}_{\sigma h_i^*}(p_i + \sigma K_i \bar x) .

    Steps satisfy ``tau sigma ||K||² < 1`` with ``||K|| = ||[K_1; K_2; ...]||`` by power
    iteration. Their ratio matters (over 4x in iterations on sparse-view CT), so by default it
    adapts (Goldstein, Li, Yuan, Esser & Baraniuk, "Adaptive primal-dual splitting methods",
    2015): while the primal residual norm ``||P||`` is over ``1.5`` times the dual residual norm
    ``||D||``, ``tau`` grows and ``sigma`` shrinks by the factor ``1 / (1 - alpha)`` (and
    conversely), keeping ``tau sigma`` fixed; ``alpha`` starts at 0.5 and decays by ``0.95`` at
    each adaptation, so the steps settle. The primal and dual residuals

    .. math:: P = (x - x^+)/\tau - K^H(p - p^+), \qquad D = (p - p^+)/\sigma - K(x - x^+)

    normalised by ``sum_i ||K_i^H p_i^+||`` and ``||K x^+||`` give the stopping residual (their max).

    Args:
        tau, sigma: step sizes (``None``: ``0.99 / ||K||`` each, before adaptation). Given
            both, ``tau sigma ||K||² < 1`` is checked at run time.
        adaptive: balance the residuals by adapting the ratio (default ``True``).
    """

    tau: float | None = eqx.field(static=True, default=None)
    sigma: float | None = eqx.field(static=True, default=None)
    adaptive: bool = eqx.field(static=True, default=True)

    def validate(self, problem):
        if not self._terms(problem)[1]:
            raise TypeError("PDHG needs at least one dual term (a fidelity or a regulariser)")
        for name in ("tau", "sigma"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ValueError(f"PDHG: `{name}` must be > 0, got {v}")

    def _terms(self, problem):
        return split_terms(problem, keep_quadratic_fidelity=False, constraint_as_term=False)

    def init(self, problem, x0):
        _, terms = self._terms(problem)
        real = jnp.finfo(x0.dtype).dtype
        L = stacked_norm([K for K, _ in terms]).astype(real) * 1.01
        if self.tau is None and self.sigma is None:
            tau = sigma = 0.99 / L
        elif self.tau is not None and self.sigma is not None:
            tau, sigma = jnp.asarray(self.tau, real), jnp.asarray(self.sigma, real)
            tau = eqx.error_if(
                tau, tau * sigma * (L / 1.01) ** 2 >= 1, "PDHG: steps violate tau * sigma * ||K||^2 < 1"
            )
        else:
            given = jnp.asarray(self.tau if self.tau is not None else self.sigma, real)
            other = 0.99 / (given * L**2)
            tau, sigma = (given, other) if self.tau is not None else (other, given)
        p = tuple(jnp.zeros(K.out_shape, K.out_dtype) for K, _ in terms)
        inf = jnp.asarray(jnp.inf, real)
        return _State(x0, p, tau, sigma, jnp.asarray(0.5, real), inf, jnp.zeros((), jnp.int32))

    def _iterate(self, problem, x, p, tau, sigma):
        _, terms = self._terms(problem)
        kt_p = sum(K.rmv(pi) for (K, _), pi in zip(terms, p))
        x_new = x - tau * kt_p
        if problem.constraint is not None:
            x_new = problem.constraint.prox(x_new, tau)
        xbar = 2 * x_new - x
        p_new = tuple(g.prox_conj(pi + sigma * K.mv(xbar), sigma) for (K, g), pi in zip(terms, p))
        return x_new, p_new, kt_p

    def step(self, problem, s):
        _, terms = self._terms(problem)
        x, p, kt_p_old = self._iterate(problem, s.x, s.p, s.tau, s.sigma)
        dx = s.x - x
        dp = tuple(a - b for a, b in zip(s.p, p))
        kt_p = sum(K.rmv(pi) for (K, _), pi in zip(terms, p))
        primal = dx / s.tau - (kt_p_old - kt_p)
        dual = tuple(dpi / s.sigma - K.mv(dx) for (K, _), dpi in zip(terms, dp))
        # each residual relative to the term it balances (not to the steps, which adapt)
        # (at the solution sum_i K_i^H p_i = -grad G, often 0: scale by the separate terms)
        rp = ratio(_norm(primal), sum(_norm(K.rmv(pi)) for (K, _), pi in zip(terms, p)))
        rd = ratio(_norm(dual), _norm(tuple(K.mv(x) for K, _ in terms)))
        tau, sigma, alpha = s.tau, s.sigma, s.alpha
        if self.adaptive:
            np_, nd = _norm(primal), _norm(dual)
            up = np_ > 1.5 * nd
            down = nd > 1.5 * np_
            f = jnp.where(up, 1 / (1 - alpha), jnp.where(down, 1 - alpha, 1.0))
            tau, sigma = tau * f, sigma / f
            alpha = jnp.where(up | down, alpha * 0.95, alpha)
        res = jnp.maximum(rp, rd).astype(s.tau.dtype)
        return _State(x, p, tau, sigma, alpha, res, s.k + 1)

    def residual(self, problem, old, new):
        return new.res

    def fixed_point_vars(self, state):
        return (state.x, state.p)

    def fixed_point(self, problem, xp, state):
        x, p = xp
        x_new, p_new, _ = self._iterate(problem, x, p, state.tau, state.sigma)
        return (x_new, p_new)

    def x_from_fixed_point(self, problem, xp, state):
        return xp[0]
