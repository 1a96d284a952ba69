import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import invjax as ij
from tests.conftest import x64_enabled

CartesianMRI = ij.operators.CartesianMRI


def _complex(rng, shape):
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


@pytest.mark.parametrize("centered", [False, True])
def test_full_mask_single_coil_is_unitary(centered, rng):
    A = CartesianMRI(np.ones((16, 12)), centered=centered)
    x = jnp.asarray(_complex(rng, (16, 12)), jnp.complex64)
    assert float(jnp.linalg.norm(A(x))) == pytest.approx(float(jnp.linalg.norm(x)), rel=1e-5)
    np.testing.assert_allclose(A.T(A(x)), x, atol=1e-5)
    np.testing.assert_allclose(A(A.T(x)), x, atol=1e-5)


def test_multicoil_matches_numpy_reference(rng):
    mask = rng.random((10, 14)) > 0.6
    sens = _complex(rng, (4, 10, 14))
    x = _complex(rng, (10, 14))
    y = _complex(rng, (4, 10, 14))
    A = CartesianMRI(mask, sens, centered=True)
    F = lambda v: np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(v, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    Fi = lambda v: np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(v, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    expected = mask * F(sens * x)
    expected_adj = np.sum(np.conj(sens) * Fi(mask * y), axis=0)
    np.testing.assert_allclose(A(jnp.asarray(x, jnp.complex64)), expected, atol=1e-4)
    np.testing.assert_allclose(A.T(jnp.asarray(y, jnp.complex64)), expected_adj, atol=1e-4)


def test_uncentered_single_coil_matches_numpy(rng):
    mask = rng.random((8, 8)) > 0.5
    x = _complex(rng, (8, 8))
    A = CartesianMRI(mask)
    np.testing.assert_allclose(A(jnp.asarray(x, jnp.complex64)), mask * np.fft.fft2(x) / 8.0, atol=1e-5)


def test_real_image_input_is_promoted(rng):
    A = CartesianMRI(np.ones((6, 6)))
    x = rng.standard_normal((6, 6)).astype(np.float32)
    np.testing.assert_allclose(A(x), np.fft.fft2(x, norm="ortho"), atol=1e-5)


@settings(max_examples=3, deadline=None)
@given(h=st.integers(2, 20), w=st.integers(2, 20), coils=st.integers(0, 3), seed=st.integers(0, 2**31 - 1), double=st.booleans())
def test_dot_test_random_shapes(h, w, coils, seed, double):
    rng = np.random.default_rng(seed)
    sens = _complex(rng, (coils, h, w)) if coils else None
    tol = 1e-12 if double else 1e-5
    if double:
        with x64_enabled():
            A = CartesianMRI(rng.random((h, w)) > 0.3, sens, centered=bool(seed % 2))
            assert A.dtype == jnp.complex128
            assert float(ij.operators.check_adjoint(A, jax.random.PRNGKey(seed))) < tol
    else:
        sens = None if sens is None else sens.astype(np.complex64)
        A = CartesianMRI(rng.random((h, w)) > 0.3, sens, centered=bool(seed % 2))
        assert float(ij.operators.check_adjoint(A, jax.random.PRNGKey(seed))) < tol


@pytest.mark.parametrize(
    "mask,sens,exc,match",
    [
        (np.ones(8), None, ValueError, r"`mask` must be 2-D \(H, W\), got shape \(8,\)"),
        (np.ones((8, 8)), np.ones((2, 8, 7)), ValueError, r"`sensitivities` must have shape \(C, 8, 8\).*got \(2, 8, 7\)"),
        (np.ones((8, 8)), np.ones((8, 8)), ValueError, r"`sensitivities` must have shape"),
        (np.full((8, 8), np.nan), None, ValueError, r"`mask` must be finite"),
        (np.ones((8, 8)) * 1j, None, TypeError, r"`mask` must be real"),
    ],
)
def test_bad_input(mask, sens, exc, match):
    with pytest.raises(exc, match=match):
        CartesianMRI(mask, sens)
