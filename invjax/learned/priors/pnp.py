r"""Plug-and-play priors: a denoiser in place of a proximal map, and half-quadratic splitting.

Plug-and-play (Venkatakrishnan, Bouman & Wohlberg, GlobalSIP 2013) replaces the proximal step of
a regulariser in a splitting algorithm by a denoiser. A proximal map

.. math:: \operatorname{prox}_{s R}(v) = \arg\min_x\; s R(x) + \tfrac12 \|x - v\|^2

is the MAP denoiser of ``v = x + n``, ``n ~ N(0, s I)``, under the prior ``exp(-R)``: so a
Gaussian denoiser at noise level ``sigma = sqrt(s)`` takes its place (:class:`DenoiserPrior`).

**How the weight arrives.** In ``ij.Problem(A, y, regularizer=DenoiserPrior(D), weight=w)`` the
solvers apply ``w * R`` (a :class:`~invjax.functionals.Scaled`), whose prox at step ``s`` is
``R``'s prox at step ``s w``. So the denoiser runs at ``sigma = sqrt(s w)``: in FISTA with step
``tau`` at ``sqrt(tau w)``; in ADMM with penalty ``rho`` at ``sqrt(w / rho)``. For data with
noise level ``sigma_n`` the MAP estimate minimises ``||A x - y||² / (2 sigma_n²) + R(x)``, i.e.
``½||A x - y||² + sigma_n² R(x)``: the Bayesian weight is ``w = sigma_n²``.

**Which solvers.** The denoiser is used only through ``prox``: FISTA (the proximal step;
with momentum, or a fixed-point iteration ``x = D(x - tau grad f(x))`` in the limit), ADMM (the
regulariser is split off with the identity, ``composite`` being the default ``(I, self)``;
keep ``rho`` fixed with ``adapt_iters=0`` for a fixed denoising strength) and :class:`HQS`
below. PDHG also runs, through the Moreau identity (a denoiser at ``sqrt(w / s)`` applied to
the dual point divided by ``s``), but no convergence result covers it. There is no value
(see :meth:`DenoiserPrior.__call__`) and no gradient, so smooth-only solvers (CG, Landweber)
refuse it. Derivatives: ``diff="unroll"`` backpropagates through the iterations (into the
denoiser's parameters too); ``diff="implicit"`` raises ``TypeError`` when differentiated,
since a plug-and-play fixed point is not the minimiser of a known objective.

**Convergence** (Ryu, Liu, Wang, Chen, Wang & Yin, "Plug-and-play methods provably converge
with properly trained denoisers", ICML 2019). Assume the residual ``N = I - D`` is
``eps``-Lipschitz (a :class:`~invjax.learned.networks.dncnn.DnCNN` with ``spectral_norm=True`` and
``lipschitz=eps``), so the reflected denoiser ``2D - I = I - 2N`` is ``(1 + 2 eps)``-Lipschitz
and ``D`` is ``(1 + eps)``-Lipschitz, and let ``f = ½||A x - y||²`` with the spectrum of
``A^T A`` in ``[mu, L]``, ``mu > 0`` (``f`` strongly convex). Then:

* PnP-ADMM (:class:`~invjax.solvers.ADMM` with fixed ``rho``, relaxation ``alpha`` in (0, 2),
  equivalently Douglas-Rachford) iterates ``s_{k+1} = T(s_k)`` on the input of the denoising
  step, ``s = alpha x + (1 - alpha) z^- + u^-``, which equals ``z + u`` after each iteration,
  with ``T = (1 - alpha/2) I + (alpha/2) R_f R_D``, ``R_D = 2D - I`` and
  ``R_f = 2 prox_{f/rho} - I = (rho - A^T A)(rho + A^T A)^{-1}``, which is ``c``-Lipschitz with
  ``c = max_{lambda in {mu, L}} |rho - lambda| / (rho + lambda)``. So

  .. math:: \|T s - T s'\| \le q \|s - s'\|, \qquad
            q = |1 - \alpha/2| + (\alpha/2)\, c\, (1 + 2\varepsilon),

  and for ``q < 1`` the iterates converge linearly (rate ``q``) to the unique fixed point, from
  any start: :func:`admm_contraction` returns ``q``. (Ryu et al.'s Theorem 2 gives a sharper
  rate for ``alpha = 1``; the bound above needs only the composition of Lipschitz maps and
  holds for either order of the two steps.)
* PnP proximal gradient (forward-backward, ``x = D(x - tau grad f(x))``) is a contraction
  with rate ``(1 + eps) max(|1 - tau mu|, |1 - tau L|)`` (Ryu et al., Theorem 1;
  :func:`fbs_contraction`), below 1 for some ``tau`` when ``eps < 2 mu / (L - mu)``. FISTA
  iterates towards the same fixed point with momentum, which this bound does not cover.
* :class:`HQS` with fixed ``rho`` iterates ``z = D(prox_{f/rho}(z))``, a contraction with
  rate ``(1 + eps) rho / (rho + mu)`` (:func:`hqs_contraction`).
"""

from __future__ import annotations

from typing import Callable, ClassVar

import equinox as eqx
import jax.numpy as jnp

from ...functionals import Functional
from ...functionals._validate import as_input, check_step, safe_sqrt

__all__ = ["PnP", "DenoiserPrior", "admm_contraction", "fbs_contraction", "hqs_contraction"]


class _FunctionDenoiser(eqx.Module):
    """A plain function ``(x, sigma) -> x`` held as static data (no parameters to train)."""

    fn: Callable = eqx.field(static=True)

    def __call__(self, x, sigma):
        return self.fn(x, sigma)


class DenoiserPrior(Functional):
    r"""The implicit prior of a Gaussian denoiser, used through its "proximal map".

    .. math:: \operatorname{prox}_{s R}(v) := D\big(v, \sqrt{s}\big),

    with ``D(v, sigma)`` a denoiser for noise of standard deviation ``sigma`` (see the module
    docstring for where ``s`` comes from in each solver, and for the convergence conditions).

    Arguments:
        denoiser: a callable ``denoiser(v, sigma) -> x`` of the shape and dtype of ``v`` (for a
            model with a ``denoise(v, sigma)`` method that is called instead), e.g. a
            :class:`~invjax.learned.networks.dncnn.DnCNN`. An equinox module is held as a pytree (its
            arrays can be trained through ``diff="unroll"`` solves); a plain function is held as
            static data (hashable; a new function object recompiles).

    ``sigma`` reaches the denoiser as a real scalar of ``v``'s precision. The denoiser must
    accept ``v`` of the problem's image shape; a denoiser that ignores ``sigma`` (a blind one, or
    a fixed filter) is allowed. Use a scalar ``weight`` in the problem: an array weight would be
    applied inside the split (``z = weight * x``), which means nothing to a denoiser (FISTA and
    HQS refuse it; ADMM cannot tell).

    Not a functional: it has no value (``__call__`` returns NaN, see there), no gradient, and
    no optimality condition, so implicit derivatives raise ``TypeError``. ``PnP`` is the same
    class.

    Example:
        >>> A = ij.operators.Convolution(jnp.ones((3, 3)) / 9, (16, 16))
        >>> smooth = lambda v, sigma: 0.5 * v + 0.25 * (jnp.roll(v, 1, 0) + jnp.roll(v, -1, 0))
        >>> problem = ij.Problem(A, A(jnp.ones((16, 16))), regularizer=ij.learned.DenoiserPrior(smooth), weight=0.01)
        >>> x = ij.solve(problem, ij.solvers.ADMM(rho=1.0, adapt_iters=0, tol=1e-4)).x
        >>> x.shape
        (16, 16)

        A network: ``DenoiserPrior(ij.learned.pretrained("dncnn"))`` (its ``denoise``).
    """

    denoiser: Callable
    # solvers of a relaxed problem (HQS) accept only plug-and-play regularisers: they ask for this
    # flag rather than the class, which lives in a layer above them
    plug_and_play: ClassVar[bool] = True

    def __init__(self, denoiser):
        if not callable(denoiser) and not callable(getattr(denoiser, "denoise", None)):
            raise TypeError(
                f"DenoiserPrior: `denoiser` must be callable as denoiser(v, sigma), got {type(denoiser).__name__}"
            )
        if not isinstance(denoiser, eqx.Module):
            denoiser = _FunctionDenoiser(getattr(denoiser, "denoise", denoiser))
        self.denoiser = denoiser

    def __call__(self, x):
        """NaN (of ``x``'s precision): a denoiser defines no value of the prior.

        The solvers report ``objective = F(A x) + weight R(x)`` in their statistics, so an
        exception here would make every plug-and-play solve fail; the objective is NaN instead
        (the iterates are unaffected). Judge convergence by ``stats.residual``.
        """
        x = as_input(x, "DenoiserPrior", "x")
        return jnp.full((), jnp.nan, jnp.finfo(x.dtype).dtype)

    def prox(self, v, step):
        """The denoiser at ``sigma = sqrt(step)``: ``denoiser(v, sqrt(step))``."""
        who = "DenoiserPrior.prox"
        v = as_input(v, who, "v", real=True)
        sigma = safe_sqrt(check_step(step, v, who))
        apply = getattr(self.denoiser, "apply", None)
        channels = getattr(self.denoiser, "channels", None)
        if callable(apply) and channels is not None and v.ndim in (2, 3):
            # the network's unchecked batch path: no per-iteration input checks inside the loop
            img = v[None, None] if v.ndim == 2 else v[None]
            if img.shape[1] != channels:
                raise ValueError(f"{who}: the denoiser takes {channels} channel(s); the image has shape {v.shape}")
            out = apply(img, jnp.reshape(sigma, (1,)).astype(v.dtype))[0]
            out = out[0] if v.ndim == 2 else out
        else:
            fn = getattr(self.denoiser, "denoise", self.denoiser)
            out = jnp.asarray(fn(v, sigma))
        if out.shape != v.shape:
            raise ValueError(f"{who}: the denoiser must return the shape of its input {v.shape}, got {out.shape}")
        return out.astype(v.dtype)

    def manifold(self, w, step, floor=0.0, max_curvature=None):
        raise NotImplementedError(
            "DenoiserPrior: a plug-and-play fixed point is not the minimiser of a known objective, so it has no "
            "optimality condition to differentiate implicitly (use diff='unroll')"
        )

    def manifold_grad(self, u, pinned):
        return self.manifold(u, 1.0)

    def grad(self, x):
        raise NotImplementedError(
            "DenoiserPrior has no gradient: it enters solvers through its prox (FISTA, ADMM, HQS)"
        )


PnP = DenoiserPrior


def admm_contraction(eps, rho, mu, L, relaxation: float = 1.0) -> float:
    """The contraction rate ``q`` of PnP-ADMM (module docstring): residual ``eps``-Lipschitz,
    penalty ``rho``, spectrum of ``A^T A`` in ``[mu, L]``, relaxation ``alpha``; ``q < 1``
    guarantees linear convergence.

    Arguments:
        eps: Lipschitz constant of the denoiser's residual ``I - D``.
        rho: the ADMM penalty (fixed).
        mu, L: the smallest and largest eigenvalues of ``A^T A`` (``0 < mu <= L``).
        relaxation: ``alpha`` in (0, 2) (default 1: no relaxation).

    Returns:
        ``q = |1 - alpha/2| + (alpha/2) c (1 + 2 eps)`` with
        ``c = max(|rho - mu| / (rho + mu), |rho - L| / (rho + L))``, a float.

    Example:
        ``c = 1/3`` for ``rho = 1, mu = 1/2, L = 2``; ``q = 1/2 + (1/3)(1.2) / 2 = 0.7``:

        >>> round(ij.learned.admm_contraction(eps=0.1, rho=1.0, mu=0.5, L=2.0), 6)
        0.7
    """
    c = max(abs(rho - mu) / (rho + mu), abs(rho - L) / (rho + L))
    return abs(1 - relaxation / 2) + relaxation / 2 * c * (1 + 2 * eps)


def hqs_contraction(eps, rho, mu) -> float:
    """The contraction rate ``(1 + eps) rho / (rho + mu)`` of PnP-HQS with fixed ``rho``.

    Arguments:
        eps: Lipschitz constant of the denoiser's residual ``I - D``.
        rho: the HQS penalty (fixed).
        mu: the smallest eigenvalue of ``A^T A``.

    Returns:
        The rate, a float; below 1 exactly when ``eps < mu / rho``.

    Example:
        >>> round(ij.learned.hqs_contraction(eps=0.1, rho=1.0, mu=0.5), 6)  # 1.1 / 1.5
        0.733333
    """
    return (1 + eps) * rho / (rho + mu)


def fbs_contraction(eps, tau, mu, L) -> float:
    """The contraction rate ``(1 + eps) max(|1 - tau mu|, |1 - tau L|)`` of PnP proximal
    gradient (Ryu et al. 2019, Theorem 1).

    Arguments:
        eps: Lipschitz constant of the denoiser's residual ``I - D``.
        tau: the gradient step.
        mu, L: the smallest and largest eigenvalues of ``A^T A``.

    Returns:
        The rate, a float (smallest at ``tau = 2 / (mu + L)``).

    Example:
        >>> round(ij.learned.fbs_contraction(eps=0.1, tau=0.8, mu=0.5, L=2.0), 6)  # 1.1 * 0.6
        0.66
    """
    return (1 + eps) * max(abs(1 - tau * mu), abs(1 - tau * L))
