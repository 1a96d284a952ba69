r"""Moreau-Yosida unadjusted Langevin algorithm (MYULA) for non-smooth priors."""

from __future__ import annotations

import jax.numpy as jnp  # noqa: F401  (the example's namespace)

from ..solvers import Problem
from ._target import AbstractSampler, SamplingAlgorithm, build_target, check_positive, check_sigma
from .ula import _check_factor, langevin_algorithm


class MYULA(AbstractSampler):
    r"""Proximal (Moreau-Yosida) unadjusted Langevin algorithm (Durmus, Moulines & Pereyra,
    "Efficient Bayesian computation by proximal MCMC", SIAM J. Imaging Sci. 11(1), 2018).

    The target ``exp(-U)``, ``U = (F(A x; y) + w R(x)) / sigma^2 + iota_C(x)``, has its
    non-smooth terms ``h`` (a regulariser with a prox: TV, L1, L21; a constraint) replaced by
    their Moreau-Yosida envelopes, whose gradients need only the prox:

    .. math:: \nabla h^\lambda(x) = \frac{x - \operatorname{prox}_{\lambda h}(x)}{\lambda},
              \qquad x_{k+1} = x_k - \delta\big(\nabla U_{\mathrm{smooth}}(x_k)
              + \textstyle\sum \nabla h^\lambda(x_k)\big) + \sqrt{2\delta}\, z_k .

    ``prox_{lambda h}`` of ``w R / sigma^2`` is ``R.prox(x, lambda w / sigma^2)``. An iterative
    prox (TV) runs ``prox_iters`` inner iterations per step, warm-started from the previous
    step's dual variable (carried in the chain's state).

    Arguments:
        step: ``delta > 0`` (``None``: ``step_factor / L``, ``L = L_smooth + n / lambda`` for
            ``n`` envelopes); must be below ``2 / L``.
        smoothing: the envelopes' ``lambda > 0`` (``None``: ``1 / L_smooth``, the paper's
            recommended scale; the bias of the envelope grows with ``lambda``).
        prox_iters: inner iterations of an iterative prox per step (default 10).
        step_factor: ``delta L`` of the default step, in ``(0, 2)`` (default 1).

    Raises:
        ValueError: a non-positive ``step`` or ``smoothing``, a step above ``2 / L``, an array
            ``weight``.
        TypeError: a regulariser without a prox, a non-smooth fidelity (at :meth:`build`).

    Example:
        >>> import invjax as ij
        >>> op = ij.operators.Identity((4,))
        >>> problem = ij.Problem(op, jnp.ones(4), ij.functionals.L1(), weight=0.5)
        >>> alg = ij.sampling.MYULA().build(problem, sigma=1.0)
        >>> float(alg.smoothing), float(alg.step_size)     # lambda = 1 / L_F, delta = 1 / (L_F + 1 / lambda)
        (1.0, 0.5)
    """

    step: float | None = None
    smoothing: float | None = None
    prox_iters: int = 10
    step_factor: float = 1.0

    def __init__(self, step=None, smoothing=None, prox_iters=10, step_factor=1.0):
        self.step_factor = _check_factor(step_factor, "MYULA")
        self.step = check_positive(step, "step", "MYULA")
        self.smoothing = check_positive(smoothing, "smoothing", "MYULA")
        if isinstance(prox_iters, bool) or not isinstance(prox_iters, int) or prox_iters < 1:
            raise ValueError(f"MYULA: `prox_iters` must be an int >= 1, got {prox_iters!r}")
        self.prox_iters = prox_iters

    def build(self, problem: Problem, sigma) -> SamplingAlgorithm:
        """Bind to ``problem`` and noise level ``sigma``: a :class:`SamplingAlgorithm`."""
        sigma = check_sigma(sigma, "MYULA")
        target = build_target(problem, sigma, "MYULA", smooth_only=False, smoothing=self.smoothing,
                              prox_iters=self.prox_iters)
        return langevin_algorithm(problem, target, self.step, "MYULA", self.step_factor)
