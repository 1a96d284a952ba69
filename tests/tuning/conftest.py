"""Small Tikhonov deconvolution problems with closed-form (FFT) oracles for the tuning tests."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import invjax as ij
import invjax.tuning  # noqa: F401

fn = ij.functionals


class Tikhonov:
    """``min ½||h * x - y||² + (lam/2) ||x||²`` on a periodic ``n x n`` grid, solved by CG and
    in closed form on the FFT (numpy, float64)."""

    def __init__(self, n=32, sigma=0.02, batch=2, seed=0):
        self.n, self.sigma = n, sigma
        self.A = ij.operators.Convolution(ij.operators.gaussian_psf(5, 1.5), (n, n))
        x = ij.phantoms.camera(2 * n)[n // 2 : n // 2 + n, :n]
        shifts = [np.roll(np.asarray(x), 7 * b, axis=1) for b in range(batch)]
        self.x = jnp.asarray(np.stack(shifts), jnp.float32)
        noise = sigma * jax.random.normal(jax.random.PRNGKey(seed), self.x.shape)
        self.y = jax.vmap(self.A)(self.x) + noise
        self.solver = ij.solvers.CG(max_iters=400, tol=1e-6)
        psf_full = np.fft.irfft2(np.asarray(self.A.otf, np.complex128), s=(n, n))
        self.h2 = np.abs(np.fft.fft2(psf_full)) ** 2
        self.H = np.fft.fft2(psf_full)

    def make(self, w, y):
        return ij.Problem(self.A, y, fn.SquaredL2(), w)

    # ---- closed forms ----------------------------------------------------------------------
    def xhat(self, lam, y):
        Y = np.fft.fft2(np.asarray(y, np.float64))
        return np.real(np.fft.ifft2(np.conj(self.H) * Y / (self.h2 + lam)))

    def influence(self, lam):
        return self.h2 / (self.h2 + lam)

    def gcv(self, lam, y):
        m = y.size
        f = self.influence(lam)
        y2 = np.abs(np.fft.fft2(np.asarray(y, np.float64), norm="ortho")) ** 2
        return (np.sum((1 - f) ** 2 * y2) / m) / (np.sum(1 - f) / m) ** 2

    def residual2(self, lam, y):
        f = self.influence(lam)
        y2 = np.abs(np.fft.fft2(np.asarray(y, np.float64), norm="ortho")) ** 2
        return np.sum((1 - f) ** 2 * y2)

    def sure(self, lam, y):
        """Measurement-domain SURE per measurement with the exact trace."""
        m = y.size
        return (self.residual2(lam, y) - m * self.sigma**2 + 2 * self.sigma**2 * np.sum(self.influence(lam))) / m

    def argmin(self, f, lo=1e-6, hi=1e1):
        from scipy.optimize import minimize_scalar

        ts = np.linspace(np.log(lo), np.log(hi), 300)
        i = int(np.argmin([f(np.exp(t)) for t in ts]))
        res = minimize_scalar(lambda t: f(np.exp(t)), bounds=(ts[max(i - 1, 0)], ts[min(i + 1, 299)]),
                              method="bounded", options=dict(xatol=1e-9))
        return float(np.exp(res.x))


@pytest.fixture(scope="module")
def tik():
    return Tikhonov()
