r"""Plug-and-play ULA: a denoiser as the prior's score (Laumont et al. 2022)."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax.numpy as jnp

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


class PnPULA(AbstractSampler):
    r"""Plug-and-play unadjusted Langevin algorithm (Laumont, De Bortoli, Almansa, Delon, Durmus &
    Pereyra, "Bayesian imaging using Plug & Play priors: when Langevin meets Tweedie", SIAM J.
    Imaging Sci. 15(2), 2022).

    A denoiser ``D_eps`` trained for Gaussian noise of standard deviation ``eps`` gives, by
    Tweedie's identity, the score of the prior smoothed at that level,
    ``grad log p_eps(x) ≈ (D_eps(x) - x) / eps^2``. The chain, for the problem's fidelity
    ``F(A x; y) / sigma^2`` (its regulariser must be ``None``: the denoiser is the prior), is

    .. math:: x_{k+1} = x_k - \delta \frac{\nabla F(A x_k)}{\sigma^2}
              + \frac{\alpha\delta}{\epsilon^2}\big(D_\epsilon(x_k) - x_k\big)
              + \frac{\delta}{\lambda}\big(\Pi_C(x_k) - x_k\big) + \sqrt{2\delta}\, z_k ,

    with ``Pi_C`` the projection onto the box ``C = [lo, hi]^d`` (the paper's compact set,
    which keeps the chain stable where the denoiser was never trained).

    Arguments:
        denoiser: an object with ``denoise(x, sigma)`` (``ij.learned.pretrained("dncnn")``) or a
            callable ``(x, sigma) -> x``.
        noise_level: ``eps``, the level the denoiser is applied at (on the image's scale; the
            paper uses 5/255). Required: a PnP prior has no meaning without it.
        alpha: prior strength ``alpha > 0`` (default 1).
        bounds: ``(lo, hi)`` of ``C`` (default ``(-1, 2)``, the paper's choice for [0, 1] images).
        projection: ``lambda > 0`` of the projection term (``None``: ``1 / (L_y + alpha / eps^2)``).
        step: ``delta`` (``None``: ``1 / (3 L)``, ``L = L_y + alpha / eps^2 + 1 / lambda``, the
            paper's rule with a denoiser residual of Lipschitz constant 1); must be below ``1 / L``.

    Raises:
        ValueError: non-positive settings, ``lo >= hi``, a step above ``1 / L``.
        TypeError: a denoiser without ``denoise``/not callable, a problem with a regulariser.

    Example:
        >>> import invjax as ij
        >>> shrink = lambda x, s: x / (1 + s**2)          # exact MMSE denoiser of an N(0, I) prior
        >>> problem = ij.Problem(ij.operators.Identity((4,)), jnp.ones(4))
        >>> alg = ij.sampling.PnPULA(shrink, noise_level=0.5).build(problem, sigma=1.0)
        >>> round(float(alg.step_size), 4)                # 1 / (3 (1 + 4 + 5))
        0.0333
    """

    denoiser: Any
    noise_level: float
    alpha: float = 1.0
    bounds: tuple = (-1.0, 2.0)
    projection: float | None = None
    step: float | None = None

    def __init__(self, denoiser, noise_level=None, alpha=1.0, bounds=(-1.0, 2.0), projection=None, step=None):
        if not (hasattr(denoiser, "denoise") or callable(denoiser)):
            raise TypeError(f"PnPULA: `denoiser` must have a `denoise(x, sigma)` method or be callable, got {type(denoiser).__name__}")
        if noise_level is None:
            raise ValueError("PnPULA: `noise_level` (the denoiser's sigma eps) is required: the prior's score is (D_eps(x) - x) / eps^2")
        self.denoiser = denoiser
        self.noise_level = check_positive(noise_level, "noise_level", "PnPULA", allow_none=False)
        self.alpha = check_positive(alpha, "alpha", "PnPULA", allow_none=False)
        try:
            lo, hi = (float(b) for b in bounds)
        except (TypeError, ValueError) as err:
            raise TypeError(f"PnPULA: `bounds` must be a pair (lo, hi), got {bounds!r}") from err
        if not lo < hi:
            raise ValueError(f"PnPULA: `bounds` must satisfy lo < hi, got {bounds!r}")
        self.bounds = (lo, hi)
        self.projection = check_positive(projection, "projection", "PnPULA")
        self.step = check_positive(step, "step", "PnPULA")

    def _denoise(self, x):
        if hasattr(self.denoiser, "denoise"):
            return self.denoiser.denoise(x, self.noise_level)
        return self.denoiser(x, self.noise_level)

    def build(self, problem: Problem, sigma) -> SamplingAlgorithm:
        """Bind to ``problem`` (fidelity only) and noise level ``sigma``."""
        sigma = check_sigma(sigma, "PnPULA")
        if isinstance(problem, Problem) and (problem.regularizer is not None or problem.constraint is not None):
            raise TypeError(
                "PnPULA: the problem must have no `regularizer` and no `constraint`: the denoiser is the prior "
                "and the projection onto `bounds` the constraint"
            )
        target = build_target(problem, sigma, "PnPULA", smooth_only=True, use_regularizer=False)
        real = target.lipschitz.dtype
        eps2 = self.noise_level**2
        l_prior = self.alpha / eps2
        lam = (1.0 / (target.lipschitz + l_prior)) if self.projection is None else jnp.asarray(self.projection, real)
        lipschitz = target.lipschitz + l_prior + 1.0 / lam
        if self.step is None:
            delta = 1.0 / (3.0 * lipschitz)
        else:
            delta = check_step_bound(self.step, 1.0 / lipschitz, "PnPULA", "1 / L with L = L_y + alpha / eps^2 + 1 / lambda")
        lo, hi = self.bounds
        coef = self.alpha / eps2

        def init(position):
            return SamplerState(jnp.asarray(position, problem.op.dtype), ())

        def step_fn(key, state):
            x = state.position
            dt = jnp.finfo(x.dtype).dtype
            d, lm = delta.astype(dt), jnp.asarray(lam, dt)
            g, _ = target.grad(x, ())
            drift = -g + coef * (self._denoise(x) - x) + (jnp.clip(x, lo, hi) - x) / lm
            x = x + d * drift + jnp.sqrt(2 * d) * normal_like(key, x)
            return SamplerState(x, ()), None

        start = jnp.clip(target.start, lo, hi)
        return SamplingAlgorithm(init, step_fn, target.potential, jnp.asarray(delta, real), jnp.asarray(lam, real),
                                 jnp.asarray(lipschitz, real), 1, start)
