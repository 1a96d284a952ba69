"""Metrics against scikit-image and closed forms; jit, vmap, grad; bad inputs; properties."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from jax.test_util import check_grads
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from invjax import metrics

# Three pairs, two shapes (each new shape recompiles): square, and odd non-square.
SHAPES = [(24, 24), (19, 31), (24, 24)]


def _pair(seed, shape, dtype):
    """A reference in [0, 1] and a noisy, slightly biased estimate of it."""
    rng = np.random.default_rng(seed)
    ref = rng.random(shape)
    ref[: shape[0] // 2] *= 0.5  # not a flat texture: local statistics vary
    x = 0.9 * ref + 0.05 + 0.1 * rng.standard_normal(shape)
    return x.astype(dtype), ref.astype(dtype)


def _ptp(a):
    return float(a.max() - a.min())


def check_against_skimage(dtype):
    tol = 1e-4 if dtype == np.float32 else 1e-10
    for seed, shape in enumerate(SHAPES):
        x, ref = _pair(seed, shape, dtype)
        for data_range in (None, 1.0, 2.5):
            expected_range = _ptp(ref) if data_range is None else data_range
            got = metrics.psnr(x, ref, data_range)
            assert got.dtype == dtype
            want = peak_signal_noise_ratio(ref, x, data_range=expected_range)
            np.testing.assert_allclose(got, want, atol=tol, rtol=0)
            got = metrics.ssim(x, ref, data_range)
            assert got.dtype == dtype
            want = structural_similarity(x, ref, data_range=expected_range)
            np.testing.assert_allclose(got, want, atol=tol, rtol=0)


def test_psnr_ssim_match_skimage_float32():
    check_against_skimage(np.float32)


def test_psnr_ssim_match_skimage_float64(x64):
    check_against_skimage(np.float64)


@pytest.mark.parametrize(
    "options",
    [
        dict(win_size=3, K1=0.05, K2=0.1),
        dict(win_size=9, use_sample_covariance=False),
        dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False),  # Wang et al.
        # A filter wider than the crop reaches the border: reflect padding.
        dict(gaussian_weights=True, sigma=1.0, win_size=5),
    ],
)
def test_ssim_options_match_skimage(options, x64):
    x, ref = _pair(7, (30, 27), np.float64)
    got = metrics.ssim(x, ref, 1.0, **options)
    want = structural_similarity(x, ref, data_range=1.0, **options)
    np.testing.assert_allclose(got, want, atol=1e-10, rtol=0)


def test_psnr_default_range_matches_skimage_dtype_guess_for_unit_images():
    # scikit-image guesses data_range = 1 for nonnegative floats; ours takes ref's range,
    # which is 1 exactly when ref spans [0, 1].
    x, ref = _pair(3, (16, 16), np.float32)
    ref[0, 0], ref[0, 1] = 0.0, 1.0
    np.testing.assert_allclose(metrics.psnr(x, ref), peak_signal_noise_ratio(ref, x), atol=1e-4)


def test_mse_nmse_closed_forms(rng):
    x, ref = rng.standard_normal((2, 5, 6))
    np.testing.assert_allclose(metrics.mse(x, ref), np.mean((x - ref) ** 2), rtol=1e-6)
    want = np.sum((x - ref) ** 2) / np.sum(ref**2)
    np.testing.assert_allclose(metrics.nmse(x, ref), want, rtol=1e-6)
    xc = x + 1j * rng.standard_normal(x.shape)
    rc = ref + 1j * rng.standard_normal(x.shape)
    got = metrics.mse(xc.astype(np.complex64), rc.astype(np.complex64))
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, np.mean(np.abs(xc - rc) ** 2), rtol=1e-5)
    want = np.sum(np.abs(xc - rc) ** 2) / np.sum(np.abs(rc) ** 2)
    np.testing.assert_allclose(metrics.nmse(xc, rc), want, rtol=1e-5)


def test_identical_images():
    _, ref = _pair(0, (16, 16), np.float32)
    assert metrics.psnr(ref, ref) == np.inf
    np.testing.assert_allclose(metrics.ssim(ref, ref), 1.0, atol=1e-6)
    assert metrics.mse(ref, ref) == 0 and metrics.nmse(ref, ref) == 0


def test_integer_inputs_promote_to_default_float():
    a = np.arange(64, dtype=np.uint8).reshape(8, 8)
    b = a[::-1]
    assert metrics.psnr(a, b).dtype == jnp.float32
    assert metrics.ssim(a, b).dtype == jnp.float32
    np.testing.assert_allclose(
        metrics.psnr(a, b, 255), peak_signal_noise_ratio(b, a, data_range=255), atol=1e-4
    )


def test_jit_and_vmap_match_eager():
    pairs = [_pair(s, (20, 20), np.float32) for s in range(3)]
    xs = jnp.stack([p[0] for p in pairs])
    refs = jnp.stack([p[1] for p in pairs])
    for fn in (metrics.psnr, metrics.ssim, metrics.nmse):
        eager = np.array([fn(x, r) for x, r in zip(xs, refs)])
        np.testing.assert_allclose(jax.vmap(fn)(xs, refs), eager, rtol=1e-5)
    want = metrics.psnr(xs[0], refs[0])
    np.testing.assert_allclose(jax.jit(metrics.psnr)(xs[0], refs[0]), want, rtol=1e-5)
    # data_range may be traced, and batched.
    ranges = jnp.array([1.0, 2.0, 3.0])
    got = jax.jit(jax.vmap(metrics.ssim))(xs, refs, ranges)
    eager = [metrics.ssim(x, r, float(d)) for x, r, d in zip(xs, refs, ranges)]
    np.testing.assert_allclose(got, eager, rtol=1e-5)


def test_psnr_gradient_closed_form():
    x, ref = _pair(1, (12, 10), np.float32)
    grad = jax.grad(metrics.psnr)(x, ref, 1.0)
    err = x - ref
    want = -10 / np.log(10) * (2 * err / err.size) / np.mean(err**2)
    np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-6)


def test_gradients_match_finite_differences(x64):
    x, ref = _pair(2, (11, 10), np.float64)
    for fn in (metrics.ssim, metrics.psnr):
        check_grads(jax.jit(lambda x: fn(x, ref)), (x,), order=1, modes=["rev"])


def test_shape_mismatch_names_both_shapes():
    for fn in (metrics.psnr, metrics.ssim, metrics.mse, metrics.nmse):
        with pytest.raises(ValueError, match=r"x.shape=\(8, 9\).*ref.shape=\(9, 8\)"):
            fn(jnp.zeros((8, 9)), jnp.zeros((9, 8)))


def test_bad_inputs():
    img = jnp.ones((16, 16))
    with pytest.raises(ValueError, match=r"\(H, W\).*\(2, 16, 16\).*vmap"):
        metrics.ssim(jnp.ones((2, 16, 16)), jnp.ones((2, 16, 16)))
    with pytest.raises(ValueError, match="odd"):
        metrics.ssim(img, img, 1.0, win_size=4)
    with pytest.raises(ValueError, match="exceeds"):
        metrics.ssim(jnp.ones((5, 16)), jnp.ones((5, 16)), 1.0)
    for fn in (metrics.psnr, metrics.ssim):
        with pytest.raises(ValueError, match="data_range"):
            fn(img, img, 0.0)
        with pytest.raises(ValueError, match="data_range"):
            fn(img, img, -1.0)
        with pytest.raises(TypeError, match="real"):
            fn(img * 1j, img)


_seeds = st.integers(0, 2**32 - 1)
_shapes = st.sampled_from([(7, 7), (12, 9), (16, 16)])


@settings(max_examples=10, deadline=None)
@given(seed=_seeds, shape=_shapes, scale=st.floats(0.01, 100.0), shift=st.floats(-10, 10))
def test_invariances(seed, shape, scale, shift):
    """nmse is scale-invariant; psnr with the default range is affine-invariant; with an
    explicit range psnr and ssim are symmetric in their two arguments."""
    x, ref = _pair(seed, shape, np.float32)
    xd, ref64 = x.astype(np.float64), ref.astype(np.float64)
    np.testing.assert_allclose(
        metrics.nmse(scale * x, scale * ref), metrics.nmse(x, ref), rtol=1e-4
    )
    scaled = metrics.psnr(scale * xd + shift, scale * ref64 + shift)
    # Rounding the shifted inputs to float32 perturbs each error by ~eps (|shift| + scale);
    # relative to the RMS error that moves the PSNR by 20 / ln(10) times as much, in dB.
    rms = scale * np.sqrt(np.mean((xd - ref64) ** 2))
    tol = 1e-4 + 20 / np.log(10) * 2**-23 * (abs(shift) + 2 * scale) / rms
    np.testing.assert_allclose(scaled, metrics.psnr(x, ref), atol=tol)
    np.testing.assert_allclose(metrics.psnr(x, ref, 1.0), metrics.psnr(ref, x, 1.0), atol=1e-4)
    np.testing.assert_allclose(metrics.ssim(x, ref, 1.0), metrics.ssim(ref, x, 1.0), atol=1e-5)
    assert metrics.ssim(x, ref, 1.0) <= 1.0 + 1e-6
