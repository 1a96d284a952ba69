import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage as ndi
from hypothesis import given, settings, strategies as st

import invjax as ij
from tests.conftest import x64_enabled

Convolution = ij.operators.Convolution


@pytest.mark.parametrize("psf_shape,shape", [((9, 9), (64, 64)), ((3, 7), (17, 20)), ((1, 1), (5, 4)), ((17, 17), (17, 17))])
def test_matches_scipy_wrap_convolution(psf_shape, shape, rng):
    psf = rng.random(psf_shape)
    psf /= psf.sum()  # a physical PSF: nonnegative, unit mass
    x = rng.random(shape)
    A = Convolution(psf.astype(np.float32), shape)
    expected = ndi.convolve(x, psf, mode="wrap")
    assert np.abs(np.asarray(A(x.astype(np.float32))) - expected).max() < 1e-5
    # adjoint is the correlation with the same PSF
    np.testing.assert_allclose(A.T(x.astype(np.float32)), ndi.correlate(x, psf, mode="wrap"), atol=1e-5)


@settings(max_examples=6, deadline=None)
@given(
    n=st.integers(3, 24), m=st.integers(3, 24), k0=st.integers(0, 5), k1=st.integers(0, 5),
    seed=st.integers(0, 2**31 - 1), double=st.booleans(),
)
def test_dot_test_random_shapes(n, m, k0, k1, seed, double):
    rng = np.random.default_rng(seed)
    psf_shape = (min(2 * k0 + 1, n - (1 - n % 2)), min(2 * k1 + 1, m - (1 - m % 2)))
    if double:
        with x64_enabled():
            A = Convolution(rng.standard_normal(psf_shape), (n, m))
            assert A.dtype == jnp.float64
            assert float(ij.operators.check_adjoint(A, jax.random.PRNGKey(seed))) < 1e-12
    else:
        A = Convolution(rng.standard_normal(psf_shape).astype(np.float32), (n, m))
        assert float(ij.operators.check_adjoint(A, jax.random.PRNGKey(seed))) < 1e-5


def test_norm_is_max_transfer_function_modulus(rng):
    psf = rng.random((5, 5)).astype(np.float32)
    A = Convolution(psf, (32, 32))
    expected = np.abs(np.fft.fft2(np.pad(psf, ((0, 27), (0, 27))))).max()
    assert float(A.norm(iters=500)) == pytest.approx(expected, rel=1e-3)


def test_grad_with_respect_to_psf_matches_finite_difference(rng, x64):
    x = rng.random((10, 10))
    psf = rng.random((3, 3))
    d = rng.standard_normal((3, 3))

    def loss(p):
        return jnp.sum(Convolution(p, (10, 10))(x) ** 2)

    g = jax.grad(loss)(jnp.asarray(psf))
    eps = 1e-6
    fd = (loss(psf + eps * d) - loss(psf - eps * d)) / (2 * eps)
    assert float(jnp.vdot(g, d)) == pytest.approx(float(fd), rel=1e-6)


def test_the_psf_is_the_one_source_of_truth(rng, x64):
    """The operator holds its PSF alone: eqx.tree_at on it changes every application, and a
    gradient with respect to the operator (as a pytree) reaches it (it was silently zero while
    a stored transfer function did the work)."""
    x = rng.random((10, 10))
    A = Convolution(rng.random((3, 3)), (10, 10))
    new = rng.random((3, 3))
    B = eqx.tree_at(lambda a: a.psf, A, jnp.asarray(new))
    np.testing.assert_allclose(B(x), ndi.convolve(x, new, mode="wrap"), atol=1e-12)
    np.testing.assert_allclose(B.T(x), ndi.correlate(x, new, mode="wrap"), atol=1e-12)
    g = eqx.filter_grad(lambda op: jnp.sum(op(x) ** 2))(A).psf
    d = rng.standard_normal((3, 3))
    eps = 1e-6
    loss = lambda p: jnp.sum(eqx.tree_at(lambda a: a.psf, A, p)(x) ** 2)  # noqa: E731
    fd = (loss(A.psf + eps * d) - loss(A.psf - eps * d)) / (2 * eps)
    assert float(jnp.vdot(g, d)) == pytest.approx(float(fd), rel=1e-6)
    assert float(jnp.linalg.norm(g)) > 0


@pytest.mark.parametrize(
    "psf,shape,exc,match",
    [
        (np.ones(5), (8, 8), ValueError, r"`psf` must be 2-D, got shape \(5,\)"),
        (np.ones((3, 3, 3)), (8, 8), ValueError, r"`psf` must be 2-D"),
        (np.ones((4, 3)), (8, 8), ValueError, r"`psf` sizes must be odd .*\(4, 3\)"),
        (np.ones((9, 3)), (8, 8), ValueError, r"`psf` of shape \(9, 3\) is larger than the image `shape` \(8, 8\)"),
        (np.array([[1.0, np.nan, 1.0]] * 3), (8, 8), ValueError, r"`psf` must be finite"),
        (np.array([[np.inf]]), (8, 8), ValueError, r"`psf` must be finite"),
        (np.ones((3, 3)), (8,), ValueError, r"`shape` must have 2 entries"),
        (np.ones((3, 3)), (8, 0), ValueError, r"`shape` entries must be >= 1"),
        (np.ones((3, 3)) * 1j, (8, 8), TypeError, r"`psf` must be real"),
    ],
)
def test_bad_input(psf, shape, exc, match):
    with pytest.raises(exc, match=match):
        Convolution(psf, shape)


def test_complex_input_rejected():
    A = Convolution(np.ones((3, 3), np.float32), (8, 8))
    with pytest.raises(TypeError, match=r"`x` must be real"):
        A(jnp.ones((8, 8), jnp.complex64))
