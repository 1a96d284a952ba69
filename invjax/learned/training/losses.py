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

    Arguments:
        sigma: the noise standard deviation on the ``[0, 1]`` scale, ``> 0``, or a pair
            ``0 <= sigma_min < sigma_max`` (levels drawn uniformly in ``(sigma_min, sigma_max]``,
            never 0).

    Returns:
        ``loss(model, batch, key) -> scalar`` (the batch's dtype).

    Raises:
        ValueError: a non-finite or non-positive level, or a pair out of order.

    Example:
        >>> loss = ij.learned.denoising_loss((0.0, 50 / 255))
        >>> shrink = lambda y, sigma: 0.5 + 0.9 * (y - 0.5)        # a plain callable "denoiser"
        >>> loss(shrink, jnp.full((2, 16, 16), 0.5), jax.random.key(1)).shape     # a scalar
        ()

        The identity "denoiser" leaves the noise, whose mean square is ``sigma^2``:

        >>> value = ij.learned.denoising_loss(0.1)(lambda y, s: y, jnp.zeros((2, 16, 16)), jax.random.key(0))
        >>> bool(abs(value - 0.1 ** 2) < 0.002)
        True

        With a network: ``loss(ij.learned.FFDNet(key=k), batch, key)`` (its ``denoise``).
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

    Arguments:
        make_problem: ``(theta, y) -> Problem`` for one image.
        solver: an invjax solver.
        op: the forward operator ``A`` that makes the measurements.
        noise: the noise standard deviation ``sigma >= 0``.
        loss: ``"mse"`` (mean squared error per image) or ``"psnr"`` (``10 log10 MSE``, i.e.
            maximise the mean PSNR).

    Returns:
        ``loss(theta, batch, key) -> scalar``, differentiable in ``theta``.

    Raises:
        ValueError: an unknown ``loss``, a negative or non-finite ``noise``; at call, a batch
            whose shape is not ``(B,) + op.in_shape``.

    Example:
        Tikhonov denoising ``argmin ||x - y||^2 / 2 + w ||x||^2 / 2 = y / (1 + w)``: without noise
        the loss is ``(w / (1 + w))^2 mean(x^2)``, ``1/4`` at ``w = 1`` for ``x = 1``, and its
        derivative ``2 w / (1 + w)^3 = 1/4``:

        >>> op = ij.operators.Identity((4,))
        >>> make = lambda w, y: ij.Problem(op, y, ij.functionals.SquaredL2(), w)
        >>> loss = ij.learned.reconstruction_loss(make, ij.solvers.CG(), op, noise=0.0)
        >>> value, grad = jax.jit(jax.value_and_grad(loss))(1.0, jnp.ones((2, 4)), jax.random.key(0))
        >>> print(f"{float(value):.4f} {float(grad):.4f}")
        0.2500 0.2500
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


_MOVED_NOISE = ("`noise` is keyword-only and absolute (the noise standard deviation, as in reconstruction_loss); "
                "pass noise=0.05 for a standard deviation of 0.05, or relative_noise=0.05 for the former default "
                "rule sigma_b = 0.05 * mean|A x_b|")


def _noise_level(who, args, noise, relative_noise, relative):
    if args or relative is not None:
        raise TypeError(f"{who}: {_MOVED_NOISE}")
    if (noise is None) == (relative_noise is None):
        raise TypeError(f"{who}: give exactly one of `noise` (absolute) and `relative_noise` (a fraction of mean|A x|)")
    value, name = (noise, "noise") if noise is not None else (relative_noise, "relative_noise")
    if not (isinstance(value, (int, float, np.floating, np.integer)) and np.isfinite(value) and value >= 0):
        raise ValueError(f"{who}: `{name}` must be a finite float >= 0, got {value!r}")
    return float(value), relative_noise is not None


def supervised_loss(op, *args, noise: float | None = None, relative_noise: float | None = None,
                    relative=None) -> Callable:
    r"""``loss(model, batch, key)`` for a reconstruction network (``LearnedPrimalDual``,
    ``MoDL``, ``DEQ``, or any ``model(y) -> x``) trained end to end on simulated data:

    .. math:: \frac{1}{B} \sum_b \|N_\theta(A x_b + s_b n_b) - x_b\|^2 / n, \qquad
              s_b = \text{noise} \;\text{ or }\; \text{relative\_noise} \cdot \operatorname{mean}|A x_b|,

    over a batch of clean images ``x`` ``(B,) + op.in_shape``, with fresh noise ``n_b`` from
    ``key`` (complex Gaussian with ``E|n|^2 = 1`` for complex data, see :func:`measure`). The
    model is called on the whole batch with ``jax.vmap(model)``.

    Arguments:
        op: the forward operator ``A``.
        noise: the noise standard deviation ``s_b = noise`` (absolute, keyword-only), or
        relative_noise: ``s_b = relative_noise * mean|A x_b|``, per image (the rule of Adler &
            Öktem 2018: 5 % of the mean absolute measurement is ``relative_noise=0.05``).
            Exactly one of the two.

    Returns:
        ``loss(model, batch, key) -> scalar``.

    Raises:
        TypeError: neither or both noise levels; a positional noise level or ``relative=``
            (the former signature, whose positional ``noise`` was relative by default).
        ValueError: a negative or non-finite level; at call, a batch of the wrong shape.

    Example:
        >>> A = ij.operators.Mask(jnp.ones((8, 8)))
        >>> loss = ij.learned.supervised_loss(A, noise=0.01)
        >>> value = loss(lambda y: y, jnp.zeros((2, 8, 8)), jax.random.key(0))
        >>> bool(0 < value < 1e-3)
        True
    """
    level, rel = _noise_level("supervised_loss", args, noise, relative_noise, relative)
    in_shape = tuple(op.in_shape)

    def value(model, batch, key):
        batch = jnp.asarray(batch)
        if tuple(batch.shape[1:]) != in_shape:
            raise ValueError(
                f"supervised_loss: the batch must have shape (B,) + {in_shape} (op.in_shape), got {batch.shape}"
            )
        y = _measure(op, batch, level, rel, key)
        return jnp.mean(jnp.abs(jax.vmap(model)(y) - batch) ** 2)

    return value


def measure(op, images, *args, key=None, noise: float | None = None, relative_noise: float | None = None,
            relative=None) -> jax.Array:
    r"""Noisy measurements ``y_b = A x_b + s_b n_b`` of a batch of images.

    ``n_b ~ N(0, I)`` (complex data: ``(n_1 + i n_2) / sqrt(2)``, so ``E|n|^2 = 1``), with
    ``s_b = noise`` or ``s_b = relative_noise * mean|A x_b|`` (per image).

    Arguments:
        op: the forward operator ``A``.
        images: ``(B,) + op.in_shape``.
        key: a ``jax.random`` key (keyword, required).
        noise: the absolute noise standard deviation (keyword-only), or
        relative_noise: the standard deviation as a fraction of each image's ``mean|A x_b|``.
            Exactly one of the two.

    Returns:
        ``(B,) + op.out_shape`` in the measurement dtype.

    Raises:
        TypeError: neither or both noise levels, no key, or the former positional signature
            ``measure(op, images, noise, key, relative=True)`` (its noise was relative by
            default).

    Example:
        >>> A = ij.operators.Mask(jnp.ones((4, 4)))
        >>> y = ij.learned.measure(A, jnp.ones((2, 4, 4)), key=jax.random.key(0), relative_noise=0.05)
        >>> y.shape
        (2, 4, 4)
    """
    level, rel = _noise_level("measure", args, noise, relative_noise, relative)
    if key is None:
        raise TypeError("measure: `key` (a jax.random key, keyword) is required")
    return _measure(op, jnp.asarray(images), level, rel, key)


def _measure(op, images, level, relative, key):
    clean = jax.vmap(op)(images)
    axes = tuple(range(1, clean.ndim))
    scale = level * (jnp.mean(jnp.abs(clean), axis=axes, keepdims=True) if relative else 1.0)
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
    noisy inputs themselves is the attribute ``validate.noisy_psnr``.

    Arguments:
        images: held-out clean images, each ``(H_i, W_i)`` on the ``[0, 1]`` scale (sizes may
            differ).
        sigma: the noise standard deviation on that scale.
        key: ``jax.random`` key for the noise (keyword, required).

    Returns:
        ``validate(model) -> float``, the mean PSNR over the images, with the attribute
        ``noisy_psnr`` (a float); for :func:`train`'s ``validate``.

    Example:
        >>> images = [jnp.full((32, 32), 0.5), jnp.full((16, 24), 0.25)]
        >>> validate = ij.learned.denoising_validation(images, 0.1, key=jax.random.key(0))
        >>> bool(abs(validate.noisy_psnr - 20) < 0.5)  # -10 log10(0.1^2) = 20 dB
        True
        >>> validate(lambda y, sigma: jnp.full_like(y, jnp.mean(y))) > 30  # ideal for flat images
        True
    """
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


