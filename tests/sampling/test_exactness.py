"""Samplers against closed-form posteriors (float64).

Gaussian prior (``SquaredL2``) and a blur: the posterior is ``N(m, P^{-1})`` with
``P = (A^T A + w I) / sigma^2`` and ``m = (A^T A + w I)^{-1} A^T y``. Each sampler's chain on it
is linear, so its stationary law at the chosen step and the Monte-Carlo error of its running
moments are closed forms (``_gaussian.py``): the tests check the sampled mean and variance
against the *chain's* law within 5 Monte-Carlo standard deviations (a sharp check of the
implementation), and against the *true posterior*: the chains' stationary mean is exact on Gaussians, so the
sampled mean is checked against ``m`` itself within 5 Monte-Carlo standard deviations per
pixel, and the variance bias the theory predicts at the default step must be within the
issue's 5e-2 (``benchmarks/sampling.py`` measures the relative errors of long runs).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import invjax as ij
from invjax.sampling.skrock import skrock_coefficients
from tests.conftest import x64_enabled

from ._gaussian import chain_law, skrock_factors, ula_factors

N, SIGMA, WEIGHT = 8, 0.1, 0.02


def gaussian_problem(seed=0, dtype=jnp.float64):
    A = ij.operators.Convolution(ij.operators.gaussian_psf(5, 1.0, dtype=dtype), shape=(N, N))
    M = np.asarray(A.as_matrix()).reshape(N * N, N * N)
    rng = np.random.default_rng(seed)
    x = rng.normal(0, SIGMA / np.sqrt(WEIGHT), N * N)  # a draw from the prior
    y = M @ x + SIGMA * rng.normal(size=N * N)
    problem = ij.Problem(A, jnp.asarray(y.reshape(N, N)), ij.functionals.SquaredL2(), weight=WEIGHT)
    H = M.T @ M + WEIGHT * np.eye(N * N)
    mean = np.linalg.solve(H, M.T @ y)
    P = H / SIGMA**2
    return problem, P, mean, x


def check_against_chain(post, P, mean, delta, factors):
    n = float(post.count)
    var_chain, mean_sd, var_sd = chain_law(P, delta, factors)
    m = np.asarray(post.mean).ravel()
    v = np.asarray(post.var).ravel()
    assert np.all(np.abs(m - mean) <= 5 * mean_sd / np.sqrt(n)), np.max(np.abs(m - mean) / (mean_sd / np.sqrt(n)))
    assert np.all(np.abs(v - var_chain) <= 5 * var_sd / np.sqrt(n)), np.max(np.abs(v - var_chain) / (var_sd / np.sqrt(n)))
    return m, v


def test_ula_gaussian_posterior():
    with x64_enabled():
        problem, P, mean, _ = gaussian_problem()
        post = ij.sampling.sample(problem, ij.sampling.ULA(), jax.random.PRNGKey(1), sigma=SIGMA,
                                  n_samples=40_000, burn_in=300)
        L = np.linalg.eigvalsh(P).max()
        assert float(post.step_size) == pytest.approx(1 / L, rel=1e-6)  # the default: 1 / L
        check_against_chain(post, P, mean, 1 / L, ula_factors)
        predicted = chain_law(P, 1 / L, ula_factors)[0] / np.diag(np.linalg.inv(P)) - 1
        assert 0.01 < np.max(np.abs(predicted)) < 0.02  # 1.5 % at 1 / L


@pytest.mark.parametrize("stages", [5, 10])
def test_skrock_gaussian_posterior(stages):
    with x64_enabled():
        problem, P, mean, _ = gaussian_problem()
        post = ij.sampling.sample(problem, ij.sampling.SKROCK(stages=stages), jax.random.PRNGKey(2), sigma=SIGMA,
                                  n_samples=4_000, burn_in=50, n_chains=2)
        ell = skrock_coefficients(stages, 0.05)[2]
        delta = 0.5 * ell / np.linalg.eigvalsh(P).max()
        assert float(post.step_size) == pytest.approx(delta, rel=1e-6)  # half the stability bound
        factors = lambda dp: skrock_factors(dp, stages)  # noqa: E731
        check_against_chain(post, P, mean, delta, factors)
        predicted = np.max(np.abs(chain_law(P, delta, factors)[0] / np.diag(np.linalg.inv(P)) - 1))
        if stages == 5:  # predicted bias 2.0 %: within the 5e-2
            assert predicted < 0.03
        else:  # s = 10 at half its bound moves too far along this posterior's slowest directions: 8.5 %
            assert 0.07 < predicted < 0.1


def test_pnp_ula_with_an_exact_denoiser():
    """The MMSE denoiser of a N(0, tau^2 I) prior, D(x) = tau^2 x / (tau^2 + eps^2), has
    (D(x) - x) / eps^2 = -x / (tau^2 + eps^2): PnP-ULA samples the Gaussian posterior of the
    prior smoothed to N(0, (tau^2 + eps^2) I) (the projection is idle on a wide box)."""
    tau, eps, alpha = 0.7, 0.1, 1.0
    with x64_enabled():
        problem, _, _, _ = gaussian_problem()
        problem = ij.Problem(problem.op, problem.data)
        M = np.asarray(problem.op.as_matrix()).reshape(N * N, N * N)
        sampler = ij.sampling.PnPULA(lambda x, s: tau**2 * x / (tau**2 + s**2), noise_level=eps, alpha=alpha,
                                     bounds=(-100, 100))
        post = ij.sampling.sample(problem, sampler, jax.random.PRNGKey(3), sigma=SIGMA, n_samples=10_000,
                                  burn_in=300, n_chains=2)
        P = M.T @ M / SIGMA**2 + alpha / (tau**2 + eps**2) * np.eye(N * N)
        mean = np.linalg.solve(P, M.T @ np.asarray(problem.data).ravel() / SIGMA**2)
        L = np.linalg.eigvalsh(M.T @ M).max() / SIGMA**2 + alpha / eps**2
        delta = 1 / (3 * (2 * L))  # projection lambda = 1 / L
        assert float(post.step_size) == pytest.approx(delta, rel=1e-6)
        check_against_chain(post, P, mean, delta, ula_factors)


def _huber_moments(y, sigma, w, lam, grid):
    """Per-coordinate mean and variance of exp(-(x - y)^2 / (2 sigma^2) - h(x)), h the
    Moreau-Yosida envelope of (w / sigma^2)|x| at lam (a Huber function), by quadrature."""
    c = w / sigma**2
    h = np.where(np.abs(grid) <= lam * c, grid**2 / (2 * lam), c * np.abs(grid) - lam * c**2 / 2)
    logp = -((grid[None] - y[:, None]) ** 2) / (2 * sigma**2) - h[None]
    p = np.exp(logp - logp.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    m = (p * grid).sum(axis=1)
    return m, (p * (grid - m[:, None]) ** 2).sum(axis=1)


def test_myula_l1_against_quadrature():
    """Identity operator and an L1 prior: the (Moreau-Yosida smoothed) posterior is a product
    of 1-D densities whose moments quadrature gives; MYULA at a small step matches them."""
    sigma, w = 0.5, 0.3
    y = np.linspace(-1.5, 1.5, 16)
    with x64_enabled():
        problem = ij.Problem(ij.operators.Identity((16,), jnp.float64), jnp.asarray(y), ij.functionals.L1(), weight=w)
        sampler = ij.sampling.MYULA(step=0.02)
        post = ij.sampling.sample(problem, sampler, jax.random.PRNGKey(4), sigma=sigma, n_samples=20_000,
                                  burn_in=300)
        lam = float(post.smoothing)
        assert lam == pytest.approx(sigma**2)  # the default: 1 / L_F
        m, v = _huber_moments(y, sigma, w, lam, np.linspace(-6, 6, 24001))
        # ULA's O(delta) bias at delta = 0.02 (delta L = 0.16): variance ~ 1 / (1 - delta L / 2), about 4 %
        # the mean within 5 Monte-Carlo standard deviations (posterior sd / sqrt(ESS), ESS by batch means)
        mc = np.sqrt(v / np.asarray(post.ess))
        assert np.all(np.abs(np.asarray(post.mean) - m) <= 5 * mc)
        # the variance: ULA's O(delta) inflation, at most 1 / (1 - delta L / 2) - 1 = 8.7 % at the
        # largest curvature L = 1 / sigma^2 + 1 / lambda = 8 (delta L = 0.16), plus 5 Monte-Carlo sd
        bias = 1 / (1 - 0.02 * float(post.lipschitz) / 2) - 1
        assert float(post.lipschitz) == pytest.approx(8.0)
        rel = np.asarray(post.var) / v - 1
        assert np.all((rel >= -5 * np.sqrt(2 / np.asarray(post.ess))) & (rel <= bias + 5 * np.sqrt(2 / np.asarray(post.ess))))
