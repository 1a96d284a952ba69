r"""Losses for :func:`~invjax.learned.train` and the measurements they simulate.

* :func:`denoising_loss`, :func:`denoising_validation`: Gaussian denoisers (``model.denoise(y, sigma)``);
* :func:`supervised_loss`, :func:`measure`: reconstruction networks (``model(y)``) on simulated data;
* :func:`reconstruction_loss`: bilevel learning of a variational problem through its solver.

Every loss has the signature ``loss(model, batch, key) -> scalar`` that :func:`train` calls.
"""

from __future__ import annotations

from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ... import metrics

__all__ = ["denoising_loss", "denoising_validation", "reconstruction_loss", "supervised_loss", "measure"]


def denoising_loss(sigma: float | tuple[float, float]) -> Callable:
    r"""``loss(model, batch, key)`` for a Gaussian denoiser: the mean squared error

    .. math:: \frac{1}{B} \sum_b \|D(x_b + \sigma_b n_b, \sigma_b) - x_b\|^2 / (H W),
              \qquad n_b \sim N(0, I),

    over a batch ``x`` of clean images ``(B, H, W)`` (or ``(B, C, H, W)``), with one noise level
    ``sigma`` or ``sigma_b`` uniform in ``(sigma_min, sigma_max]`` per image (for a network with a
    noise-level input). The model is called as ``model.denoise(noisy, sigma_b)`` on the whole
    batch (the denoiser contract: DnCNN, FFDNet, ConvexRidge, ...), or, for a plain callable
    without ``denoise``, as ``jax.vmap(model)(noisy, sigma_b)``.

    Args:
        sigma: the noise standard deviation on the ``[0, 1]`` scale, ``> 0``, or a pair
            ``0 <= sigma_min < sigma_max`` (levels drawn uniformly in ``(sigma_min, sigma_max]``,
            never 0).

    Example:
        >>> loss = denoising_loss((0.0, 50 / 255))
        >>> net = FFDNet(depth=4, width=16, key=jax.random.PRNGKey(0))
        >>> value = loss(net, jnp.full((4, 32, 32), 0.5), jax.random.PRNGKey(1))   # a scalar
    """
    lo, hi = (sigma, sigma) if np.ndim(sigma) == 0 else tuple(sigma)
    if not (0 <= lo <= hi and hi > 0 and np.isfinite(hi)):
        raise ValueError(
            f"denoising_loss: `sigma` must be a finite float > 0 or a pair 0 <= min <= max with max > 0, got {sigma!r}"
        )

    def loss(model, batch, key):
        k_n, k_s = jax.random.split(key)
        n = batch.shape[0]
        # uniform in (lo, hi]: a denoiser's noise level is > 0
        s = hi - (hi - lo) * jax.random.uniform(k_s, (n,), batch.dtype) if hi > lo else jnp.full((n,), lo, batch.dtype)
        noisy = batch + s.reshape((-1,) + (1,) * (batch.ndim - 1)) * jax.random.normal(k_n, batch.shape, batch.dtype)
        out = model.denoise(noisy, s) if hasattr(model, "denoise") else jax.vmap(model)(noisy, s)
        return jnp.mean((out - batch) ** 2)

    return loss


def reconstruction_loss(make_problem: Callable, solver, op, noise: float, loss: str = "mse") -> Callable:
    r"""``loss(model, batch, key)`` for **bilevel** learning: the reconstruction error of the
    solution of a variational problem, differentiated through the solver,

    .. math:: \frac{1}{B} \sum_b \ell\big(\hat x(\theta, y_b), x_b\big), \qquad
              \hat x(\theta, y) = \arg\min_x \text{(the problem make\_problem}(\theta, y)),
              \qquad y_b = A x_b + \sigma n_b ,

    over a batch of clean images ``x`` ``(B,) + op.in_shape``, with fresh noise ``n_b ~ N(0, I)``
    from ``key`` at every step. ``theta`` is the trained pytree (``model`` of :func:`train`), e.g.
    ``(ridge, log_weight)`` with ``make_problem = lambda th, y: ij.Problem(A, y, th[0],
    jnp.exp(th[1]))``: a regulariser's parameters and the weight are learned by one mechanism.
    With ``solver.diff == "implicit"`` the gradient comes from the optimality conditions at the
    returned image (one linear solve per image, memory independent of the solver's iterations:
    the deep-equilibrium training of Goujon, Neumayer & Unser 2024); with ``"unroll"`` by
    backpropagating through the iterations.

    Args:
        make_problem: ``(theta, y) -> Problem`` for one image.
        solver: an invjax solver.
        op: the forward operator ``A`` that makes the measurements.
        noise: the noise standard deviation ``sigma >= 0``.
        loss: ``"mse"`` (mean squared error per image) or ``"psnr"`` (``10 log10 MSE``, i.e.
            maximise the mean PSNR).
    """
    from ...solvers import solve

    if loss not in ("mse", "psnr"):
        raise ValueError(f"reconstruction_loss: `loss` must be 'mse' or 'psnr', got {loss!r}")
    if not (np.isfinite(noise) and noise >= 0):
        raise ValueError(f"reconstruction_loss: `noise` must be a finite float >= 0, got {noise!r}")
    in_shape = tuple(op.in_shape)

    def one(theta, x, k):
        clean = op(x)
        y = clean + noise * jax.random.normal(k, clean.shape, clean.dtype)
        x_hat = solve(make_problem(theta, y), solver).x
        mse = jnp.mean(jnp.abs(x_hat - x) ** 2)
        return mse if loss == "mse" else 10 * jnp.log10(mse)

    def value(theta, batch, key):
        batch = jnp.asarray(batch)
        if tuple(batch.shape[1:]) != in_shape:
            raise ValueError(
                f"reconstruction_loss: the batch must have shape (B,) + {in_shape} (op.in_shape), got {batch.shape}"
            )
        keys = jax.random.split(key, batch.shape[0])
        return jnp.mean(jax.vmap(one, in_axes=(None, 0, 0))(theta, batch, keys))

    return value


def supervised_loss(op, noise: float, *, relative: bool = True) -> Callable:
    r"""``loss(model, batch, key)`` for a reconstruction network (``LearnedPrimalDual``,
    ``MoDL``, ``DEQ``, or any ``model(y) -> x``) trained end to end on simulated data:

    .. math:: \frac{1}{B} \sum_b \|N_\theta(A x_b + s_b n_b) - x_b\|^2 / n, \qquad
              s_b = \text{noise} \cdot \operatorname{mean}|A x_b| \;(\text{relative})
              \text{ or } \text{noise},

    over a batch of clean images ``x`` ``(B,) + op.in_shape``, with fresh noise ``n_b`` from
    ``key`` (complex Gaussian with ``E|n|^2 = 1`` for complex data). ``relative=True`` is the
    rule of Adler & Öktem (2018): 5 % of the mean absolute measurement is ``noise=0.05``. The
    model is called on the whole batch with ``jax.vmap(model)``.
    """
    if not (np.isfinite(noise) and noise >= 0):
        raise ValueError(f"supervised_loss: `noise` must be a finite float >= 0, got {noise!r}")
    in_shape = tuple(op.in_shape)

    def value(model, batch, key):
        batch = jnp.asarray(batch)
        if tuple(batch.shape[1:]) != in_shape:
            raise ValueError(
                f"supervised_loss: the batch must have shape (B,) + {in_shape} (op.in_shape), got {batch.shape}"
            )
        y = measure(op, batch, noise, key, relative=relative)
        return jnp.mean(jnp.abs(jax.vmap(model)(y) - batch) ** 2)

    return value


def measure(op, images, noise: float, key, *, relative: bool = True) -> jax.Array:
    """Noisy measurements ``A x_b + s_b n_b`` of a batch ``(B,) + op.in_shape`` (see
    :func:`supervised_loss` for ``s_b``): ``(B,) + op.out_shape``."""
    clean = jax.vmap(op)(images)
    axes = tuple(range(1, clean.ndim))
    scale = noise * (jnp.mean(jnp.abs(clean), axis=axes, keepdims=True) if relative else 1.0)
    if jnp.iscomplexobj(clean):
        k1, k2 = jax.random.split(key)
        real = jnp.real(clean).dtype
        n = (jax.random.normal(k1, clean.shape, real) + 1j * jax.random.normal(k2, clean.shape, real)) / np.sqrt(2)
    else:
        n = jax.random.normal(key, clean.shape, clean.dtype)
    return clean + (scale * n).astype(clean.dtype)


def denoising_validation(images, sigma: float, *, key) -> Callable:
    """``validate(model) -> mean PSNR`` (dB, data range 1) of ``model.denoise(y, sigma)`` (or
    ``model(y, sigma)`` for a plain callable) on noisy copies
    ``y = x + sigma n`` of held-out ``images`` (the noise drawn once from ``key``). The PSNR of the
    noisy inputs themselves is the attribute ``validate.noisy_psnr``."""
    clean = [jnp.asarray(im) for im in images]
    keys = jax.random.split(key, len(clean))
    noisy = [x + sigma * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(clean, keys)]
    def apply(model, y):
        return model.denoise(y, sigma) if hasattr(model, "denoise") else model(y, sigma)

    scores = eqx.filter_jit(lambda model, y, x: metrics.psnr(apply(model, y), x, data_range=1.0))

    def validate(model):
        return float(np.mean([scores(model, y, x) for y, x in zip(noisy, clean)]))

    validate.noisy_psnr = float(np.mean([metrics.psnr(y, x, data_range=1.0) for y, x in zip(noisy, clean)]))
    return validate


