"""Sampler behaviour: coverage of credible intervals, the HPD test, divergence, memory, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import invjax as ij
from invjax.functionals import Functional
from tests.conftest import x64_enabled

from .test_exactness import SIGMA, WEIGHT, gaussian_problem


def identity_gaussian(d=16, sigma=1.0, weight=1.0, data=None):
    data = jnp.zeros(d) if data is None else data
    return ij.Problem(ij.operators.Identity((d,)), data, ij.functionals.SquaredL2(), weight=weight)


def test_interval_coverage_over_repeated_data():
    """x drawn from the Gaussian prior, y from the model: the 90 % marginal intervals of the
    exact posterior cover x in 90 % of pixels in expectation. 16 problems x 64 pixels = 1024
    pixel draws (sd of the coverage about 1 %); the sampler's intervals must give 90 +- 3 %.
    The 16 posteriors are sampled in one call, vmapped over problems."""
    problems, truths = zip(*[gaussian_problem(seed, jnp.float32)[::3] for seed in range(16)])
    data = jnp.stack([p.data for p in problems]).astype(jnp.float32)
    template = ij.Problem(problems[0].op, data[0], ij.functionals.SquaredL2(), weight=WEIGHT)

    def one(y, key):
        post = ij.sampling.sample(ij.Problem(template.op, y, template.regularizer, weight=template.weight),
                                  ij.sampling.SKROCK(stages=5), key, sigma=SIGMA, n_samples=1000, burn_in=50)
        lo, hi = post.interval(0.9)
        return lo, hi

    lo, hi = jax.jit(jax.vmap(one))(data, jax.random.split(jax.random.PRNGKey(0), 16))
    x = np.stack(truths).reshape(lo.shape)
    coverage = np.mean((np.asarray(lo) <= x) & (x <= np.asarray(hi)))
    assert abs(coverage - 0.9) <= 0.03, coverage


def test_credible_region_threshold_matches_chi_square():
    """On N(m, P^{-1}), U(x) - U(m) = chi^2_d / 2: the HPD threshold is U(m) + chi2_{d,1-a} / 2."""
    d, alpha = 16, 0.05
    problem = identity_gaussian(d, data=jnp.linspace(-1, 1, d))
    post = ij.sampling.sample(problem, ij.sampling.ULA(step=0.02), jax.random.PRNGKey(0), sigma=1.0,
                              n_samples=20_000, burn_in=200)
    mode = problem.data / 2
    u_mode = float(problem.objective(mode))
    res = ij.sampling.credible_region_test(post, mode, alpha=alpha)
    want = u_mode + scipy.stats.chi2.ppf(1 - alpha, d) / 2
    # ULA at delta = 0.02 inflates the variance by 1 / (1 - delta) (2 %): chi2 scaled by it
    assert float(res.threshold) == pytest.approx(u_mode + (want - u_mode) / 0.98, rel=0.03)
    assert not bool(res.reject)
    # an image just outside / inside the region along a direction
    direction = jnp.ones(d) / 4.0
    radius = np.sqrt(2 * 2 * (float(res.threshold) - u_mode) / d) * 4  # U - U(m) = |x - m|^2 (2 / 2) per unit
    far = ij.sampling.credible_region_test(post, mode + 1.05 * radius / 4 * direction * 4 / np.sqrt(d) * 2, alpha)
    near = ij.sampling.credible_region_test(post, mode + 0.95 * radius / 4 * direction * 4 / np.sqrt(d) * 2, alpha)
    assert bool(far.reject) and not bool(near.reject)


def test_diverging_chain_stops_and_reports():
    bad = lambda x, s: jnp.where(jnp.max(x) > 2.5, jnp.nan, x / (1 + s**2))  # noqa: E731
    problem = ij.Problem(ij.operators.Identity((16,)), jnp.zeros(16))
    post = ij.sampling.sample(problem, ij.sampling.PnPULA(bad, noise_level=0.5, bounds=(-10, 10)),
                              jax.random.PRNGKey(0), sigma=1.0, n_samples=2000, n_chains=2)
    assert bool(jnp.all(post.diverged))
    assert bool(jnp.all(post.diverged_at > 0))
    assert float(post.count) == float(jnp.sum(post.diverged_at))  # every sample before the NaN was kept
    assert bool(jnp.all(jnp.isfinite(post.mean)))
    fine = ij.sampling.sample(problem, ij.sampling.PnPULA(lambda x, s: x / (1 + s**2), noise_level=0.5),
                              jax.random.PRNGKey(0), sigma=1.0, n_samples=100)
    assert not bool(fine.diverged[0]) and int(fine.diverged_at[0]) == -1


def test_memory_flat_in_samples():
    problem = identity_gaussian(64)

    def temp_bytes(n):
        f = jax.jit(lambda p, k: ij.sampling.sample(p, ij.sampling.ULA(), k, sigma=1.0, n_samples=n, trace=False).mean)
        return f.lower(problem, jax.random.PRNGKey(0)).compile().memory_analysis().temp_size_in_bytes

    assert temp_bytes(1000) == temp_bytes(10_000)


def test_ess_and_autocorrelation_of_an_ar1_chain():
    """ULA on N(0, 1) at step delta is AR(1) with coefficient 1 - delta: ESS / n = delta / (2 - delta)."""
    problem = identity_gaussian(4, weight=0.0)  # U = |x|^2 / 2
    post = ij.sampling.sample(problem, ij.sampling.ULA(step=0.2), jax.random.PRNGKey(1), sigma=1.0,
                              n_samples=20_000, burn_in=100, n_chains=2)
    want = 0.2 / 1.8 * 40_000
    np.testing.assert_allclose(np.asarray(post.ess), want, rtol=0.25)
    # the trace U = |x|^2 / 2 has autocorrelation (1 - delta)^(2k)
    np.testing.assert_allclose(np.asarray(post.autocorrelation(3)), 0.8 ** (2 * np.arange(4)), atol=0.03)


class _NoProx(Functional):
    def __call__(self, x):
        return jnp.sum(x**4)

    # prox is abstract (a subclass without one fails at construction): a functional whose prox
    # is unavailable says so when called
    def prox(self, v, step):
        raise NotImplementedError("no closed-form prox")


def test_bad_input():
    problem = identity_gaussian(4)
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="`step` must be finite and > 0"):
        ij.sampling.ULA(step=-0.1)
    with pytest.raises(ValueError, match="`step` = 1.5 is above the stability bound 1"):
        ij.sampling.ULA(step=1.5).build(problem, 1.0)
    with pytest.raises(ValueError, match="above the stability bound"):
        ij.sampling.SKROCK(stages=3, step=100.0).build(problem, 1.0)
    with pytest.raises(TypeError, match="`regularizer` _NoProx has no prox"):
        ij.sampling.MYULA().build(ij.Problem(problem.op, problem.data, _NoProx(), weight=1.0), 1.0)
    with pytest.raises(TypeError, match="ULA needs a differentiable potential"):
        ij.sampling.ULA().build(ij.Problem(problem.op, problem.data, ij.functionals.TV(), weight=1.0), 1.0)
    with pytest.raises(ValueError, match="`noise_level`.*is required"):
        ij.sampling.PnPULA(lambda x, s: x)
    with pytest.raises(TypeError, match="`denoiser` must have a `denoise"):
        ij.sampling.PnPULA(3.0, noise_level=0.1)
    with pytest.raises(ValueError, match="`n_samples` must be an int >= 1, got 0"):
        ij.sampling.sample(problem, ij.sampling.ULA(), key, sigma=1.0, n_samples=0)
    with pytest.raises(ValueError, match="`sigma` must be finite and > 0"):
        ij.sampling.sample(problem, ij.sampling.ULA(), key, sigma=0.0, n_samples=10)
    with pytest.raises(TypeError, match="`sampler` must be an invjax sampler"):
        ij.sampling.sample(problem, "ula", key, sigma=1.0, n_samples=10)
    with pytest.raises(ValueError, match="`x0` must have shape"):
        ij.sampling.sample(problem, ij.sampling.ULA(), key, sigma=1.0, n_samples=10, x0=jnp.zeros(3))
    with pytest.raises(ValueError, match="`level` must be in"):
        ij.sampling.Posterior.interval(None, 1.5)
