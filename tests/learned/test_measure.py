"""ij.learned.measure, statistically: over many draws the simulated noise y - A x has mean 0,
the requested level (relative: noise * mean|A x| per image; absolute: noise), Gaussian fourth
moment, independent images, and for complex data E|n|^2 = noise^2 split evenly between
uncorrelated real and imaginary parts. Every bound is 5 standard errors of its estimator for
the sample size used (fixed keys, so the test is deterministic)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import invjax as ij
from invjax.learned import measure

DRAWS = 200
Z = 5.0  # standard errors


def _images():
    # two images of very different size, so a relative level differs between them
    base = ij.phantoms.shepp_logan(16).astype(np.float32)
    return jnp.stack([jnp.asarray(base), 7.0 * jnp.asarray(base[::-1]) + 0.5])


def _residuals(op, images, noise, relative):
    """``(B, DRAWS * M)`` samples of y - A x (float64 numpy) and the clean A x."""
    keys = jax.random.split(jax.random.PRNGKey(11), DRAWS)
    level = {"relative_noise": noise} if relative else {"noise": noise}
    ys = jax.jit(jax.vmap(lambda k: measure(op, images, key=k, **level)))(keys)
    clean = np.asarray(jax.vmap(op)(images))
    dtype = np.complex128 if np.iscomplexobj(clean) else np.float64
    r = np.asarray(ys, dtype) - clean.astype(dtype)[None]
    return np.moveaxis(r, 0, 1).reshape(images.shape[0], -1), clean


def _expected_sigma(clean, noise, relative):
    if not relative:
        return np.full(clean.shape[0], noise)
    return noise * np.abs(clean.astype(np.complex128)).reshape(clean.shape[0], -1).mean(axis=1)


def _check_real(r, sigma):
    n = r.size
    assert abs(r.mean()) < Z * sigma / np.sqrt(n), (r.mean(), sigma)
    # var estimator of N(0, s^2): relative standard error sqrt(2 / N)
    ratio = np.mean(r**2) / sigma**2
    assert abs(ratio - 1) < Z * np.sqrt(2 / n), ratio
    # Gaussian: E r^4 = 3 s^4, estimator variance (105 - 9) s^8 / N
    kurt = np.mean(r**4) / sigma**4
    assert abs(kurt - 3) < Z * np.sqrt(96 / n), kurt


@pytest.mark.parametrize("relative", [True, False])
def test_real_noise_has_mean_zero_and_the_requested_level(relative):
    op = ij.operators.Convolution(np.ones((3, 3), np.float32) / 9, (16, 16))
    noise = 0.05
    r, clean = _residuals(op, _images(), noise, relative)
    sigma = _expected_sigma(clean, noise, relative)
    if relative:
        assert sigma[1] > 5 * sigma[0]  # the two images really ask for different levels
    for b in range(r.shape[0]):
        _check_real(r[b], sigma[b])
    # independent noise for the two images of a batch
    corr = np.mean(r[0] * r[1]) / (sigma[0] * sigma[1])
    assert abs(corr) < Z / np.sqrt(r.shape[1]), corr


@pytest.mark.parametrize("relative", [True, False])
def test_complex_noise_is_circular_with_the_requested_level(relative):
    mask = np.zeros((16, 16), np.float32)
    mask[:, ::2] = 1.0
    op = ij.operators.CartesianMRI(jnp.asarray(mask))
    noise = 0.1
    images = _images().astype(op.dtype)
    r, clean = _residuals(op, images, noise, relative)
    assert np.iscomplexobj(clean)
    sigma = _expected_sigma(clean, noise, relative)
    for b in range(r.shape[0]):
        n, s = r.shape[1], sigma[b]
        assert abs(r[b].mean()) < Z * s / np.sqrt(n)
        # E|n|^2 = s^2; |n|^2 / s^2 is exponential(1): relative standard error 1 / sqrt(N)
        power = np.mean(np.abs(r[b]) ** 2) / s**2
        assert abs(power - 1) < Z / np.sqrt(n), power
        # real and imaginary parts each N(0, s^2 / 2), uncorrelated
        for part in (r[b].real, r[b].imag):
            _check_real(part, s / np.sqrt(2))
        cross = np.mean(r[b].real * r[b].imag) / (s**2 / 2)
        assert abs(cross) < Z / np.sqrt(n), cross


def test_the_former_relative_default_is_a_clear_error():
    # measure(op, images, 0.05, key) used to mean 5 % of mean|A x|; now `noise` is absolute and
    # keyword-only, so the old positional call cannot silently change meaning
    op = ij.operators.Mask(jnp.ones((4, 4)))
    images = jnp.ones((1, 4, 4))
    with pytest.raises(TypeError, match=r"measure: `noise` is keyword-only and absolute.*relative_noise=0.05"):
        measure(op, images, 0.05, jax.random.key(0))
    with pytest.raises(TypeError, match=r"supervised_loss: `noise` is keyword-only and absolute"):
        ij.learned.supervised_loss(op, 0.05)
    with pytest.raises(TypeError, match=r"supervised_loss: `noise` is keyword-only"):
        ij.learned.supervised_loss(op, noise=0.05, relative=False)
    with pytest.raises(TypeError, match=r"measure: give exactly one of `noise` \(absolute\) and `relative_noise`"):
        measure(op, images, key=jax.random.key(0), noise=0.1, relative_noise=0.1)
    with pytest.raises(ValueError, match=r"supervised_loss: `noise` must be a finite float >= 0, got -1"):
        ij.learned.supervised_loss(op, noise=-1)
