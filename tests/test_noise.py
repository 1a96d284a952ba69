"""Noise models: sample statistics against their laws, reproducibility, dtypes, transforms,
bad inputs.

Statistical tolerances are 5 standard errors of the estimator at the sample size used, so a
correct sampler fails a check with probability below 1e-6 (the keys are fixed anyway).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from invjax import noise

N = 100_000  # samples per statistic
Z = 5.0  # standard errors allowed
# The checks share one size: each new size recompiles the Poisson sampler (~1 s on CPU).
SHAPE = (200, N // 200)


def check_mean_var(samples, mean, var, fourth_central):
    """Sample mean and variance within Z standard errors of the true ones."""
    samples = np.asarray(samples, dtype=np.float64)
    n = samples.size
    assert abs(samples.mean() - mean) <= Z * np.sqrt(var / n) + 1e-12
    # Var of the sample variance: (mu4 - var^2) / n to leading order.
    assert abs(samples.var(ddof=1) - var) <= Z * np.sqrt((fourth_central - var**2) / n) + 1e-12


def test_gaussian_statistics():
    key = jax.random.key(0)
    y = jnp.linspace(-1.0, 1.0, N)
    sigma = 0.3
    z = noise.gaussian(key, y, sigma)
    assert z.shape == y.shape and z.dtype == jnp.float32
    check_mean_var(z - y, 0.0, sigma**2, 3 * sigma**4)
    # Successive samples are uncorrelated (white).
    e = np.asarray(z - y, np.float64)
    assert abs(np.corrcoef(e[:-1], e[1:])[0, 1]) <= Z / np.sqrt(N)


def test_gaussian_per_pixel_sigma_broadcasts():
    key = jax.random.key(1)
    y = jnp.zeros((2, N // 2))
    sigma = jnp.array([[0.1], [2.0]])
    z = np.asarray(noise.gaussian(key, y, sigma))
    check_mean_var(z[0], 0.0, 0.01, 3 * 0.1**4)
    check_mean_var(z[1], 0.0, 4.0, 3 * 2.0**4)


def test_complex_gaussian_sigma_is_std_of_the_complex_value():
    key = jax.random.key(2)
    y = jnp.full((N,), 1 + 2j, dtype=jnp.complex64)
    sigma = 0.5
    z = noise.gaussian(key, y, sigma)
    assert z.dtype == jnp.complex64
    e = np.asarray(z - y)
    # E|e|^2 = sigma^2, split equally between independent real and imaginary parts.
    half = sigma**2 / 2
    check_mean_var(e.real, 0.0, half, 3 * half**2)
    check_mean_var(e.imag, 0.0, half, 3 * half**2)
    assert abs(np.corrcoef(e.real, e.imag)[0, 1]) <= Z / np.sqrt(N)


@pytest.mark.parametrize("level", [0.02, 0.5, 3.0])
def test_poisson_statistics(level):
    photons = 40.0
    y = jnp.full(SHAPE, level)
    z = noise.poisson(jax.random.key(3), y, photons)
    assert z.dtype == jnp.float32
    counts = np.asarray(z, np.float64) * photons
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-3)  # integers / photons
    lam = photons * level
    # Poisson(lam): variance lam, fourth central moment lam + 3 lam^2.
    check_mean_var(counts, lam, lam, lam + 3 * lam**2)


def test_poisson_zero_signal_gives_zero():
    z = noise.poisson(jax.random.key(4), jnp.zeros(SHAPE), 100.0)
    np.testing.assert_array_equal(z, 0)


def test_poisson_gaussian_statistics():
    photons, sigma, level = 50.0, 0.05, 0.4
    y = jnp.full(SHAPE, level)
    z = noise.poisson_gaussian(jax.random.key(5), y, photons, sigma)
    lam = photons * level
    var = level / photons + sigma**2
    # Fourth central moment of a sum of independent parts: m4 = m4_P + 6 var_P var_G + m4_G.
    var_p, var_g = lam / photons**2, sigma**2
    m4 = (lam + 3 * lam**2) / photons**4 + 6 * var_p * var_g + 3 * var_g**2
    check_mean_var(z, level, var, m4)


def test_reproducible_and_key_dependent():
    y = jnp.linspace(0, 1, N).reshape(SHAPE)
    for draw in (
        lambda k: noise.gaussian(k, y, 0.1),
        lambda k: noise.poisson(k, y, 30.0),
        lambda k: noise.poisson_gaussian(k, y, 30.0, 0.1),
    ):
        a, b = draw(jax.random.key(7)), draw(jax.random.key(7))
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, draw(jax.random.key(8)))
    # Legacy uint32 keys work too.
    legacy = jax.random.PRNGKey(7)
    np.testing.assert_array_equal(noise.gaussian(legacy, y, 0.1), noise.gaussian(legacy, y, 0.1))


def test_dtypes_default_and_x64(x64):
    key = jax.random.key(0)
    y64 = jnp.ones(SHAPE, jnp.float64)
    assert noise.gaussian(key, y64, 0.1).dtype == jnp.float64
    # Integer signals become the default float, float64 here.
    assert noise.gaussian(key, np.ones(SHAPE, np.int32), 0.1).dtype == jnp.float64
    # Traced, not compiled: compiling the Poisson sampler again for float64 costs ~1.5 s.
    assert jax.eval_shape(noise.poisson, key, y64, 10.0).dtype == jnp.float64
    assert jax.eval_shape(noise.poisson_gaussian, key, y64, 10.0, 0.1).dtype == jnp.float64
    assert jax.eval_shape(noise.gaussian, key, y64 * 1j, 0.1).dtype == jnp.complex128


def test_integer_signal_promotes_to_float32():
    key = jax.random.key(0)
    assert noise.gaussian(key, np.ones(SHAPE, np.uint8), 1).dtype == jnp.float32
    assert noise.poisson(key, np.ones(SHAPE, np.int32), 10).dtype == jnp.float32


def test_jit_vmap_and_runtime_checks():
    """One compiled, batched program per sampler: it matches the eager draws and performs the
    checks that can only run at run time (traced noise levels and signals)."""
    y = jnp.linspace(0, 1, N).reshape(SHAPE)
    keys = jax.random.split(jax.random.key(9), 3)
    sigmas = jnp.array([0.0, 0.1, 0.2])
    gaussian = jax.jit(jax.vmap(noise.gaussian, in_axes=(0, None, 0)))
    eager = np.stack([noise.gaussian(k, y, s) for k, s in zip(keys, sigmas)])
    np.testing.assert_allclose(gaussian(keys, y, sigmas), eager, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(eager[0], y)  # sigma = 0 is exact
    with pytest.raises(Exception, match="`sigma` must be finite and nonnegative"):
        gaussian(keys, y, -sigmas).block_until_ready()
    with pytest.raises(Exception, match="`y` contains NaN"):
        gaussian(keys, y * jnp.nan, sigmas).block_until_ready()

    poisson = jax.jit(jax.vmap(noise.poisson, in_axes=(0, None, None)))
    eager = np.stack([noise.poisson(k, y, 20.0) for k in keys])
    np.testing.assert_allclose(poisson(keys, y, 20.0), eager, rtol=1e-6, atol=1e-7)
    with pytest.raises(Exception, match="`y` must be nonnegative"):
        poisson(keys, -y, 20.0).block_until_ready()
    with pytest.raises(Exception, match="`photons` must be finite and positive"):
        poisson(keys, y, 0.0).block_until_ready()


def test_gradients():
    key = jax.random.key(10)
    y = jnp.linspace(0.1, 1, N).reshape(SHAPE)
    # z = y + sigma n: dz/dy = I, dz/dsigma = n.
    g = jax.grad(lambda y: jnp.sum(noise.gaussian(key, y, 0.3) * y))(y)
    z = noise.gaussian(key, y, 0.3)
    np.testing.assert_allclose(g, z + y, rtol=1e-6)
    gs = jax.grad(lambda s: jnp.sum(noise.gaussian(key, y, s)))(0.3)
    np.testing.assert_allclose(gs, np.sum((z - y) / 0.3), rtol=1e-4)
    # Sampling counts has no derivative: a clean zero, not an error.
    gp = jax.grad(lambda y: jnp.sum(noise.poisson(key, y, 10.0)))(y)
    np.testing.assert_array_equal(gp, 0)


def test_bad_levels_raise_naming_the_argument():
    key = jax.random.key(0)
    y = jnp.ones((3, 3))
    with pytest.raises(ValueError, match="`sigma`.*nonnegative"):
        noise.gaussian(key, y, -0.1)
    with pytest.raises(ValueError, match="`sigma`"):
        noise.gaussian(key, y, jnp.array([0.1, -1.0, 0.2]))
    with pytest.raises(ValueError, match="`sigma`"):
        noise.gaussian(key, y, np.nan)
    with pytest.raises(ValueError, match="`photons`.*positive"):
        noise.poisson(key, y, 0.0)
    with pytest.raises(ValueError, match="`photons`"):
        noise.poisson(key, y, -5)
    with pytest.raises(ValueError, match="`photons`"):
        noise.poisson_gaussian(key, y, -5, 0.1)
    with pytest.raises(ValueError, match="`sigma`"):
        noise.poisson_gaussian(key, y, 5, -0.1)
    with pytest.raises(ValueError, match=r"`sigma` of shape \(2,\).*\(3, 3\)"):
        noise.gaussian(key, y, jnp.ones(2))
    with pytest.raises(TypeError, match="`sigma`"):
        noise.gaussian(key, y, 0.1j)


def test_bad_signals_raise():
    key = jax.random.key(0)
    # Host (NumPy) data is checked at once.
    with pytest.raises(ValueError, match="`y` must be nonnegative"):
        noise.poisson(key, np.array([0.5, -0.1]), 10.0)
    with pytest.raises(ValueError, match="`y` contains NaN"):
        noise.gaussian(key, np.array([0.5, np.nan]), 0.1)
    with pytest.raises(ValueError, match="`y` contains NaN"):
        noise.poisson(key, [0.5, np.inf], 10.0)
    # A JAX array is checked on device (equinox.error_if), never copied to the host.
    with pytest.raises(RuntimeError, match="`y` must be nonnegative"):
        noise.poisson(key, jnp.array([0.5, -0.1]), 10.0)
    with pytest.raises(RuntimeError, match="`y` contains NaN"):
        noise.gaussian(key, jnp.array([0.5, jnp.nan]), 0.1)
    with pytest.raises(TypeError, match="`y` must be real"):
        noise.poisson(key, jnp.ones(2, jnp.complex64), 10.0)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), sigma=st.floats(0.0, 10.0), shift=st.floats(-5, 5))
def test_gaussian_is_shift_equivariant(seed, sigma, shift):
    """The noise does not depend on the signal: z(y + c) = z(y) + c for the same key."""
    key = jax.random.key(seed)
    y = jnp.linspace(-1, 1, 16)
    a = noise.gaussian(key, y, sigma)
    b = noise.gaussian(key, y + shift, sigma)
    np.testing.assert_allclose(b - shift, a, atol=1e-4 * (1 + sigma + abs(shift)))
