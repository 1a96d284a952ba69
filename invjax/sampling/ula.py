r"""The unadjusted Langevin algorithm (ULA) for a smooth potential."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..solvers import Problem
from ._target import (
    AbstractSampler,
    SamplerState,
    SamplingAlgorithm,
    Target,
    build_target,
    check_positive,
    check_sigma,
    check_step_bound,
    normal_like,
)


def langevin_algorithm(problem: Problem, target: Target, step, who: str, step_factor: float = 1.0) -> SamplingAlgorithm:
    """The Euler-Maruyama step ``x - delta grad U(x) + sqrt(2 delta) z`` on ``target``
    (ULA, and MYULA on the smoothed target). ``step=None``: ``step_factor / L``; bound ``2 / L``."""
    real = target.lipschitz.dtype
    if step is None:
        delta = step_factor / target.lipschitz
    else:
        delta = check_step_bound(step, 2.0 / target.lipschitz, who, "2 / L for the Langevin step")

    def init(position):
        position = jnp.asarray(position, problem.op.dtype)
        return SamplerState(position, target.init_aux(position))

    def step_fn(key, state):
        x = state.position
        g, aux = target.grad(x, state.aux)
        d = delta.astype(jnp.finfo(x.dtype).dtype)
        x = x - d * g + jnp.sqrt(2 * d) * normal_like(key, x)
        return SamplerState(x, aux), None

    return SamplingAlgorithm(init, step_fn, target.potential, delta, target.smoothing, target.lipschitz, 1,
                             target.start)


class ULA(AbstractSampler):
    r"""Unadjusted Langevin algorithm for ``p(x | y) ∝ exp(-U(x))`` with a smooth potential

    .. math:: U(x) = \frac{F(A x; y) + w\, R(x)}{\sigma^2}, \qquad
              x_{k+1} = x_k - \delta \nabla U(x_k) + \sqrt{2\delta}\, z_k,\quad z_k \sim N(0, I),

    the Euler-Maruyama discretisation of the Langevin diffusion (Roberts & Tweedie, Bernoulli
    1996; Durmus & Moulines, Ann. Appl. Probab. 2017). Without a Metropolis correction its
    stationary law differs from the target by ``O(delta)``; for a Gaussian target with
    precision eigenvalue ``p`` the variance along that eigenvector is ``1 / (p (1 - delta p / 2))``
    and the mean is exact. The fidelity must be smooth (``SquaredL2``) and the regulariser
    smooth (``SquaredL2``, ``Huber``) or absent; no constraint (use :class:`MYULA`).

    Arguments:
        step: the step ``delta > 0`` (``None``: ``step_factor / L`` with ``L`` the Lipschitz
            constant of ``grad U``, ``||A||^2 L_F / sigma^2 + w L_R / sigma^2``). Must be below the
            stability bound ``2 / L`` (checked when ``L`` is known at build time; else at run time).
        step_factor: ``delta L`` of the default step, in ``(0, 2)`` (default 1). Smaller steps
            shrink the bias and slow the mixing in proportion.

    Raises:
        ValueError: a non-positive ``step``, or one above ``2 / L``.
        TypeError: a non-smooth regulariser or a constraint (at :meth:`build`).

    Example:
        >>> import invjax as ij
        >>> op = ij.operators.Identity((4,))
        >>> problem = ij.Problem(op, jnp.ones(4), ij.functionals.SquaredL2(), weight=1.0)
        >>> alg = ij.sampling.ULA().build(problem, sigma=1.0)
        >>> float(alg.step_size)              # 1 / L, L = (1 + 1) / 1
        0.5
    """

    step: float | None = None
    step_factor: float = 1.0

    def __init__(self, step=None, step_factor=1.0):
        self.step = check_positive(step, "step", "ULA")
        self.step_factor = _check_factor(step_factor, "ULA")

    def build(self, problem: Problem, sigma) -> SamplingAlgorithm:
        """Bind to ``problem`` and noise level ``sigma``: a :class:`SamplingAlgorithm`."""
        sigma = check_sigma(sigma, "ULA")
        target = build_target(problem, sigma, "ULA", smooth_only=True)
        return langevin_algorithm(problem, target, self.step, "ULA", self.step_factor)


def _check_factor(value, who):
    out = check_positive(value, "step_factor", who, allow_none=False)
    if not out < 2:
        raise ValueError(f"{who}: `step_factor` must be < 2 (the stability bound is 2 / L), got {value!r}")
    return out
