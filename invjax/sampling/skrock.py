r"""SK-ROCK: a stabilised stochastic Runge-Kutta-Chebyshev Langevin sampler."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..solvers import Problem
from ._target import (
    AbstractSampler,
    SamplerState,
    SamplingAlgorithm,
    build_target,
    check_positive,
    check_sigma,
    check_step_bound,
    normal_like,
)


def _chebyshev(s: int, x: float) -> np.ndarray:
    """``T_0(x) .. T_s(x)`` (first-kind Chebyshev polynomials)."""
    t = [1.0, x]
    for _ in range(2, s + 1):
        t.append(2 * x * t[-1] - t[-2])
    return np.array(t[: s + 1])


def skrock_coefficients(stages: int, damping: float):
    """``(mu_1, nu_1, kappa_1, mu_j, nu_j, kappa_j for j = 2..s)`` and the stability length
    ``ell_s = (s - 1/2)^2 (2 - 4 eta / 3) - 3/2`` (Abdulle, Almuslimani & Vilmart, SIAM/ASA J.
    Uncertain. Quantif. 2018; Pereyra, Vargas-Mieles & Zygalakis 2020, Algorithm 3.1)."""
    s, eta = stages, damping
    w0 = 1 + eta / s**2
    t = _chebyshev(s, w0)
    # T_s'(x) = s U_{s-1}(x); U by its recurrence
    u = [1.0, 2 * w0]
    for _ in range(2, s):
        u.append(2 * w0 * u[-1] - u[-2])
    dts = s * u[s - 1]
    w1 = t[s] / dts
    first = (float(w1 / w0), float(s * w1 / 2), float(s * w1 / w0))
    j = np.arange(2, s + 1)
    mu = 2 * w1 * t[j - 1] / t[j]
    nu = 2 * w0 * t[j - 1] / t[j]
    kappa = 1 - nu
    ell = float((s - 0.5) ** 2 * (2 - 4 * eta / 3) - 1.5)
    return first, (mu, nu, kappa), ell


class SKROCK(AbstractSampler):
    r"""Stochastic orthogonal Runge-Kutta-Chebyshev Langevin sampler (Pereyra, Vargas-Mieles &
    Zygalakis, "Accelerating proximal Markov chain Monte Carlo by using an explicit stabilized
    method", SIAM J. Imaging Sci. 13(2), 2020; the integrator of Abdulle, Almuslimani & Vilmart
    2018), on the same target as :class:`MYULA` (non-smooth terms through Moreau-Yosida
    envelopes; plain ULA's target when everything is smooth).

    One step of ``s`` stages, with ``F = -grad U_lambda``, ``z ~ N(0, I)``, ``omega_0 = 1 +
    eta / s^2``, ``omega_1 = T_s(omega_0) / T_s'(omega_0)`` (``T`` Chebyshev polynomials):

    .. math::
        K_0 = x_k,\quad K_1 = x_k + \mu_1 \delta F(x_k + \nu_1 \sqrt{2\delta} z) + \kappa_1\sqrt{2\delta} z,\\
        K_j = \mu_j \delta F(K_{j-1}) + \nu_j K_{j-1} + \kappa_j K_{j-2}\ (j = 2..s),
        \quad x_{k+1} = K_s,

    with ``mu_1 = omega_1 / omega_0``, ``nu_1 = s omega_1 / 2``, ``kappa_1 = s omega_1 / omega_0``,
    ``mu_j = 2 omega_1 T_{j-1} / T_j``, ``nu_j = 2 omega_0 T_{j-1} / T_j``, ``kappa_j = 1 - nu_j``.
    It is stable for ``delta <= ell_s / L`` with ``ell_s = (s - 1/2)^2 (2 - 4 eta / 3) - 3/2``
    (about ``2 s^2 / L`` against ULA's ``2 / L``) at ``s`` gradient evaluations per step, so the
    slow components of the chain mix about ``s`` times faster per gradient evaluation.

    Arguments:
        stages: ``s >= 2`` (default 10, as in the paper's experiments).
        damping: ``eta > 0`` (default 0.05).
        step: ``delta > 0`` (``None``: ``ell_s / (2 L)``, half the stability bound); must be
            below ``ell_s / L``.
        smoothing: Moreau-Yosida ``lambda`` (``None``: ``1 / L_smooth``).
        prox_iters: inner iterations of an iterative prox (TV) per gradient evaluation.

    Raises:
        ValueError: bad settings; a step above ``ell_s / L``.
        TypeError: a regulariser without a prox, a non-smooth fidelity (at :meth:`build`).

    Example:
        >>> import invjax as ij
        >>> op = ij.operators.Identity((4,))
        >>> problem = ij.Problem(op, jnp.ones(4), ij.functionals.TV(), weight=0.1)
        >>> alg = ij.sampling.SKROCK(stages=5).build(problem, sigma=1.0)
        >>> alg.gradient_evaluations
        5
    """

    stages: int = 10
    damping: float = 0.05
    step: float | None = None
    smoothing: float | None = None
    prox_iters: int = 10

    def __init__(self, stages=10, damping=0.05, step=None, smoothing=None, prox_iters=10):
        if isinstance(stages, bool) or not isinstance(stages, int) or stages < 2:
            raise ValueError(f"SKROCK: `stages` must be an int >= 2, got {stages!r}")
        if isinstance(prox_iters, bool) or not isinstance(prox_iters, int) or prox_iters < 1:
            raise ValueError(f"SKROCK: `prox_iters` must be an int >= 1, got {prox_iters!r}")
        self.stages = stages
        self.damping = check_positive(damping, "damping", "SKROCK", allow_none=False)
        self.step = check_positive(step, "step", "SKROCK")
        self.smoothing = check_positive(smoothing, "smoothing", "SKROCK")
        self.prox_iters = prox_iters

    @property
    def stability_length(self) -> float:
        """``ell_s``: the step bound is ``ell_s / L``."""
        return skrock_coefficients(self.stages, self.damping)[2]

    def build(self, problem: Problem, sigma) -> SamplingAlgorithm:
        """Bind to ``problem`` and noise level ``sigma``: a :class:`SamplingAlgorithm`."""
        sigma = check_sigma(sigma, "SKROCK")
        target = build_target(problem, sigma, "SKROCK", smooth_only=False, smoothing=self.smoothing,
                              prox_iters=self.prox_iters)
        (mu1, nu1, kap1), (mu, nu, kappa), ell = skrock_coefficients(self.stages, self.damping)
        real = target.lipschitz.dtype
        if self.step is None:
            delta = 0.5 * ell / target.lipschitz
        else:
            delta = check_step_bound(self.step, ell / target.lipschitz, "SKROCK", f"ell_s / L with ell_s = {ell:.4g}")
        coeffs = np.stack([mu, nu, kappa], axis=1)

        def init(position):
            position = jnp.asarray(position, problem.op.dtype)
            return SamplerState(position, target.init_aux(position))

        def step_fn(key, state):
            x = state.position
            dt = jnp.finfo(x.dtype).dtype
            d = delta.astype(dt)
            noise = jnp.sqrt(2 * d) * normal_like(key, x)
            g, aux = target.grad(x + nu1 * noise, state.aux)
            k1 = x - mu1 * d * g + kap1 * noise

            def stage(carry, c):
                prev, prev2, aux = carry
                g, aux = target.grad(prev, aux)
                new = -c[0] * d * g + c[1] * prev + c[2] * prev2
                return (new, prev, aux), None

            (xs, _, aux), _ = lax.scan(stage, (k1, x, aux), jnp.asarray(coeffs, dt))
            return SamplerState(xs, aux), None

        return SamplingAlgorithm(init, step_fn, target.potential, delta, target.smoothing, target.lipschitz,
                                 self.stages, target.start)
