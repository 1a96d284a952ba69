"""SAPG against the closed-form marginal likelihood of a Gaussian prior."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import invjax as ij

N, SIGMA, W_TRUE = 32, 0.1, 0.05


def _setup(seed):
    """A 32x32 circular Gaussian blur; x from the prior N(0, sigma^2 / w I), y = A x + noise."""
    A = ij.operators.Convolution(ij.operators.gaussian_psf(9, 2.0), shape=(N, N))
    rng = np.random.default_rng(seed)
    x = rng.normal(0, SIGMA / np.sqrt(W_TRUE), (N, N)).astype(np.float32)
    y = np.asarray(A(jnp.asarray(x)), np.float64) + SIGMA * rng.normal(size=(N, N))
    # A is circulant: its eigenvalues |A^T A| are |FFT of the impulse response|^2 (numpy's FFT)
    impulse = np.asarray(A(jnp.zeros((N, N)).at[0, 0].set(1.0)), np.float64)
    ev = np.abs(np.fft.fft2(impulse)).ravel() ** 2
    return A, ev, y


def _ml_weight(ev, y):
    """argmax_w log p(y | w) with y ~ N(0, sigma^2 (A A^T / w + I)) (prior exp(-w |x|^2 / (2 sigma^2))),
    diagonal in the unitary Fourier basis."""
    z2 = np.abs(np.fft.fft2(y)).ravel() ** 2 / y.size

    def nll(logw):
        c = SIGMA**2 * (ev / np.exp(logw) + 1)
        return 0.5 * np.sum(z2 / c + np.log(c))

    res = scipy.optimize.minimize_scalar(nll, bounds=(np.log(1e-4), np.log(10.0)), method="bounded",
                                         options={"xatol": 1e-8})
    return float(np.exp(res.x))


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_sapg_matches_the_marginal_likelihood_maximiser(seed):
    A, ev, y = _setup(seed)
    want = _ml_weight(ev, y)
    make = lambda w, y: ij.Problem(A, y, ij.functionals.SquaredL2(), weight=w)  # noqa: E731
    res = ij.tuning.sapg(make, jnp.asarray(y, jnp.float32), SIGMA, jax.random.PRNGKey(seed), init=1.0, iters=3000)
    assert float(res.weight) == pytest.approx(want, rel=0.05), (float(res.weight), want)  # measured +0.9 % / -3.9 %
    assert bool(res.converged) and not bool(res.at_bound)
    assert res.history.shape == (3000,) and np.isnan(np.asarray(res.average[:1499])).all()
    assert abs(float(res.value)) < 0.05  # the normalised score's window mean, 0 at the root
    assert res.x.shape == (N, N) and bool(jnp.all(jnp.isfinite(res.x)))


def test_sapg_bad_input():
    A, _, y = _setup(0)
    y = jnp.asarray(y, jnp.float32)
    make = lambda w, y: ij.Problem(A, y, ij.functionals.SquaredL2(), weight=w)  # noqa: E731
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="`sigma` must be finite and > 0"):
        ij.tuning.sapg(make, y, -1.0, key)
    with pytest.raises(ValueError, match="`iters` must be an int >= 1"):
        ij.tuning.sapg(make, y, SIGMA, key, iters=0)
    with pytest.raises(TypeError, match="with a regularizer"):
        ij.tuning.sapg(lambda w, y: ij.Problem(A, y), y, SIGMA, key)
    with pytest.raises(ValueError, match="pass `homogeneity`"):
        ij.tuning.sapg(lambda w, y: ij.Problem(A, y, ij.functionals.Huber(0.1), weight=w), y, SIGMA, key)
    with pytest.raises(TypeError, match="`return_info` is gone"):
        ij.tuning.sapg(make, y, SIGMA, key, return_info=True)
    with pytest.raises(TypeError, match="`sampler` must be an invjax MYULA"):
        ij.tuning.sapg(make, y, SIGMA, key, sampler=ij.sampling.PnPULA(lambda x, s: x, noise_level=0.1))
