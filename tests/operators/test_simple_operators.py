"""Mask, Downsample, FiniteDifference and the operator algebra against numpy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import invjax as ij
from tests.conftest import x64_enabled

ops = ij.operators


def test_mask_matches_numpy(rng):
    m = rng.random((7, 9)) > 0.5
    x = rng.standard_normal((7, 9)).astype(np.float32)
    A = ops.Mask(m)
    np.testing.assert_array_equal(A(x), np.where(m, x, 0))
    np.testing.assert_array_equal(A.T(x), np.where(m, x, 0))


def test_downsample_matches_numpy_block_mean(rng):
    x = rng.standard_normal((12, 9)).astype(np.float32)
    A = ops.Downsample((12, 9), (4, 3))
    expected = x.reshape(3, 4, 3, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(A(x), expected, rtol=1e-6, atol=1e-6)
    y = rng.standard_normal((3, 3)).astype(np.float32)
    np.testing.assert_allclose(A.T(y), np.kron(y, np.ones((4, 3))) / 12, rtol=1e-6)
    assert float(A.norm(iters=5)) == pytest.approx(1 / np.sqrt(12), rel=1e-5)


def test_finite_difference_matches_numpy(rng):
    x = rng.standard_normal((6, 5))
    D = ops.FiniteDifference((6, 5))
    np.testing.assert_allclose(D(x)[0], np.roll(x, -1, 0) - x, atol=1e-6)
    np.testing.assert_allclose(D(x)[1], np.roll(x, -1, 1) - x, atol=1e-6)
    Dn = ops.FiniteDifference((6, 5), boundary="neumann")
    gx = np.zeros_like(x); gx[:-1] = np.diff(x, axis=0)
    gy = np.zeros_like(x); gy[:, :-1] = np.diff(x, axis=1)
    np.testing.assert_allclose(Dn(x), np.stack([gx, gy]), atol=1e-6)
    # adjoint is the negative divergence (backward differences with matching boundary)
    p = rng.standard_normal((2, 6, 5))
    px, py = p[0].copy(), p[1].copy()
    px[-1] = 0; py[:, -1] = 0
    div = np.diff(np.vstack([np.zeros((1, 5)), px]), axis=0) + np.diff(np.hstack([np.zeros((6, 1)), py]), axis=1)
    np.testing.assert_allclose(Dn.T(p), -div, atol=1e-5)
    # periodic differences of constants vanish; the periodic norm is 2*sqrt(ndim) for even sizes
    assert float(jnp.abs(D(jnp.ones((6, 5)))).max()) == 0.0
    assert float(ops.FiniteDifference((8, 8)).norm(iters=2000)) == pytest.approx(np.sqrt(8), rel=1e-3)


def test_finite_difference_single_axis():
    D = ops.FiniteDifference((4, 5, 6), axes=(-1,))
    assert D.out_shape == (1, 4, 5, 6)
    x = jnp.arange(120.0).reshape(4, 5, 6)
    np.testing.assert_allclose(D(x)[0, :, :, :-1], 1.0)


def test_composition_adjoint_is_reversed_product(rng):
    A = ops.Convolution(rng.random((3, 3)).astype(np.float32), (8, 8))
    B = ops.Mask(rng.random((8, 8)) > 0.5)
    C = ops.Downsample((8, 8), 2)
    K = C @ B @ A
    assert K.in_shape == (8, 8) and K.out_shape == (4, 4)
    y = jnp.asarray(rng.standard_normal((4, 4)), jnp.float32)
    np.testing.assert_allclose(K.T(y), (A.T @ B.T @ C.T)(y), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(K.T(y), A.T(B.T(C.T(y))), rtol=1e-6, atol=1e-6)
    x = jnp.asarray(rng.standard_normal((8, 8)), jnp.float32)
    np.testing.assert_allclose((2.0 * A - B)(x), 2 * A(x) - B(x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose((A + B).T(x), A.T(x) + B.T(x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose((-A)(x), -A(x))
    np.testing.assert_allclose((A / 4)(x), A(x) / 4, rtol=1e-6)
    np.testing.assert_allclose(A @ x, A(x))
    assert A.T.T is A


def test_complex_scale_adjoint_conjugates(rng):
    A = ops.CartesianMRI(np.ones((4, 4)))
    S = (1 + 2j) * A
    assert float(ops.check_adjoint(S)) < 1e-6
    x = jnp.asarray(rng.standard_normal((4, 4)), jnp.complex64)
    np.testing.assert_allclose(S.T(x), (1 - 2j) * A.T(x), atol=1e-5)


def test_channel_scaled_matches_the_elementwise_weight_and_keeps_the_fourier_symbol(rng):
    D = ops.FiniteDifference((8, 6))
    c = rng.random(2) + 0.5
    K = ops.ChannelScaled(D, c)
    M = ops.Mask(np.broadcast_to(c[:, None, None], (2, 8, 6))) @ D
    x = jnp.asarray(rng.standard_normal((8, 6)), jnp.float32)
    q = jnp.asarray(rng.standard_normal((2, 8, 6)), jnp.float32)
    np.testing.assert_allclose(K.mv(x), M.mv(x), rtol=1e-6)
    np.testing.assert_allclose(K.rmv(q), M.rmv(q), rtol=1e-5, atol=1e-6)
    # rfft2((K x)[k]) = s[k] rfft2(x): the symbol diagonalises K (numpy's FFT as the oracle)
    s = np.asarray(K.fourier_symbol())
    np.testing.assert_allclose(np.fft.rfft2(np.asarray(K.mv(x))), s * np.fft.rfft2(np.asarray(x))[None], atol=1e-4)
    assert M.fourier_symbol() is None
    # an elementwise weight keeps no symbol (Neumann differences have none either)
    assert ops.ChannelScaled(ops.FiniteDifference((8, 6), boundary="neumann"), c).fourier_symbol() is None


def test_algebra_shape_mismatch_raises():
    A = ops.Downsample((8, 8), 2)
    with pytest.raises(ValueError, match=r"in_shape \(8, 8\) must equal the right operator's out_shape \(4, 4\)"):
        A @ A
    with pytest.raises(ValueError, match="equal shapes"):
        A + ops.Identity((8, 8))


@settings(max_examples=5, deadline=None)
@given(
    shape=st.lists(st.integers(1, 12), min_size=1, max_size=3).map(tuple),
    boundary=st.sampled_from(["periodic", "neumann"]),
    seed=st.integers(0, 2**31 - 1),
    double=st.booleans(),
)
def test_finite_difference_dot_test(shape, boundary, seed, double):
    with x64_enabled() if double else _nullcontext():
        D = ops.FiniteDifference(shape, boundary=boundary)
        err = float(ops.check_adjoint(D, jax.random.PRNGKey(seed)))
    assert err < (1e-12 if double else 1e-5)


@settings(max_examples=5, deadline=None)
@given(
    blocks=st.lists(st.tuples(st.integers(1, 6), st.integers(1, 4)), min_size=1, max_size=3),
    seed=st.integers(0, 2**31 - 1),
    double=st.booleans(),
)
def test_downsample_and_mask_dot_test(blocks, seed, double):
    shape = tuple(n * f for n, f in blocks)
    factor = tuple(f for _, f in blocks)
    rng = np.random.default_rng(seed)
    with x64_enabled() if double else _nullcontext():
        for op in (ops.Downsample(shape, factor), ops.Mask(rng.random(shape))):
            err = float(ops.check_adjoint(op, jax.random.PRNGKey(seed)))
            assert err < (1e-12 if double else 1e-5)


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


@pytest.mark.parametrize(
    "factory,exc,match",
    [
        (lambda: ops.Downsample((8, 8), 1.5), TypeError, r"`factor` must be a positive int.*1.5"),
        (lambda: ops.Downsample((8, 8), 2.0), TypeError, r"`factor` must be a positive int"),
        (lambda: ops.Downsample((8, 9), 2), ValueError, r"`factor` \(2, 2\) must divide `shape` \(8, 9\)"),
        (lambda: ops.Downsample((8, 8), 0), ValueError, r"`factor` must be >= 1, got \(0, 0\)"),
        (lambda: ops.Downsample((8, 8), (2, 2, 2)), ValueError, r"`factor` needs 2 entries"),
        (lambda: ops.Mask(np.ones((4, 4)), shape=(4, 5)), ValueError, r"`mask` shape \(4, 4\) must equal `shape` \(4, 5\)"),
        (lambda: ops.Mask(np.array([1.0, np.nan])), ValueError, r"`mask` must be finite"),
        (lambda: ops.Mask(1.0), ValueError, r"`mask` must be an array"),
        (lambda: ops.FiniteDifference((4, 4), boundary="zero"), ValueError, r"`boundary` must be one of"),
        (lambda: ops.FiniteDifference((4, 4), axes=(2,)), ValueError, r"`axes` must be distinct"),
        (lambda: ops.FiniteDifference((4, -1)), ValueError, r"`shape` entries must be >= 1"),
        (lambda: ops.ChannelScaled(ops.FiniteDifference((4, 4)), np.ones(3)), ValueError, r"`scale` must have shape \(channels,\) = \(2,\).*got \(3,\)"),
        (lambda: ops.ChannelScaled(ops.FiniteDifference((4, 4)), np.ones(2) * 1j), TypeError, r"`scale` must be real"),
    ],
)
def test_bad_input(factory, exc, match):
    with pytest.raises(exc, match=match):
        factory()


def test_identity_takes_a_dtype(x64):
    single = ij.operators.Identity((3, 4), dtype=jnp.float32)
    assert single.dtype == jnp.float32 and single.fourier_symbol().dtype == jnp.float32
    assert ij.operators.Identity((3, 4)).dtype == jnp.float64
    cplx = ij.operators.Identity((3, 4), dtype=jnp.complex64)
    assert cplx.dtype == jnp.complex64 and cplx.fourier_symbol() is None
    z = jnp.ones((3, 4), jnp.complex64) * (1 + 2j)
    np.testing.assert_array_equal(cplx(z), z)
    np.testing.assert_array_equal(cplx.gram_diagonal(), np.ones((3, 4)))


# ---- the abstract base: a subclass that forgets mv or its shapes fails at construction ------


def test_linear_operator_without_mv_fails_at_construction():
    from invjax.operators import LinearOperator

    class NoForward(LinearOperator):
        in_shape = (3,)
        out_shape = (3,)

    with pytest.raises(TypeError, match="abstract method.*mv"):
        NoForward()


def test_linear_operator_without_shapes_fails_at_construction():
    from invjax.operators import LinearOperator

    class NoShapes(LinearOperator):
        def mv(self, x):
            return 2 * x

    with pytest.raises(TypeError, match="must define in_shape and out_shape"):
        NoShapes()


def test_minimal_linear_operator_gets_its_adjoint_from_mv():
    """mv and the shapes are all a subclass must write: the adjoint is derived exactly."""
    import equinox as eqx
    import jax.numpy as jnp

    from invjax.operators import LinearOperator, check_adjoint

    class Reverse(LinearOperator):
        in_shape: tuple = eqx.field(static=True, default=(4,))
        out_shape: tuple = eqx.field(static=True, default=(4,))

        def mv(self, x):
            return 3.0 * x[::-1]

    A = Reverse()
    np.testing.assert_allclose(A.T(jnp.arange(4.0)), [9.0, 6.0, 3.0, 0.0])
    assert float(check_adjoint(A)) < 1e-6
