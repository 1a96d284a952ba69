"""Phantoms against scikit-image's Shepp–Logan, an independent NumPy rasteriser, closed-form
areas and line integrals; random ellipses; the bundled photographs."""

import gzip
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import ndimage

from invjax import phantoms


def _rasterise(ellipses, xs, ys):
    """Independent NumPy rasteriser: sum of ellipses at points ``xs`` (columns), ``ys`` (rows)."""
    x, y = np.meshgrid(xs, ys)
    image = np.zeros_like(x)
    for rho, a, b, x0, y0, phi in ellipses:
        u = (x - x0) * np.cos(phi) + (y - y0) * np.sin(phi)
        v = -(x - x0) * np.sin(phi) + (y - y0) * np.cos(phi)
        image += rho * ((u / a) ** 2 + (v / b) ** 2 <= 1)
    return image


def _centres(n):
    t = -1 + (np.arange(n) + 0.5) * 2 / n
    return t, -t  # x to the right; y up, so row 0 is the top


def test_ellipse_table():
    mod, orig = phantoms.shepp_logan_ellipses(), phantoms.shepp_logan_ellipses(modified=False)
    assert mod.shape == orig.shape == (10, 6)
    np.testing.assert_array_equal(mod[:, 1:], orig[:, 1:])  # same geometry
    np.testing.assert_allclose(mod[:, 0], [1, -0.8, -0.2, -0.2] + [0.1] * 6)
    np.testing.assert_allclose(orig[:, 0], [2, -0.98, -0.02, -0.02] + [0.01] * 6)
    np.testing.assert_allclose(np.rad2deg(mod[2:4, 5]), [-18, 18])


def test_table_reproduces_skimage_phantom_on_its_grid():
    """skimage's phantom samples the ellipses at ``linspace(-1, 1, 400)`` (pixel centres on
    the domain's edge) and is stored as 8-bit PNG; on that grid our table agrees with it to
    the 8-bit quantisation, 0.5 / 255, at every pixel."""
    skimage_data = pytest.importorskip("skimage.data")
    reference = skimage_data.shepp_logan_phantom()
    t = np.linspace(-1, 1, 400)
    ours = _rasterise(phantoms.shepp_logan_ellipses(), t, -t)
    assert np.abs(ours - reference).max() <= 0.5 / 255 + 1e-9


def test_shepp_logan_close_to_skimage():
    """Our pixel grid is cell-centred (centres at -1 + (j + 1/2) 2/n), skimage's runs from -1
    to 1 inclusive: the two differ by a scale of 399/400, which moves an edge by at most half
    a pixel. So pixels may disagree only next to an edge of the reference; measured mean
    absolute error 0.0043 (bounded at 0.006), correlation 0.96 (bounded at 0.95)."""
    skimage_data = pytest.importorskip("skimage.data")
    reference = skimage_data.shepp_logan_phantom()
    ours = np.asarray(phantoms.shepp_logan(400))
    assert ours.shape == reference.shape
    diff = np.abs(ours - reference)
    assert diff.mean() < 0.006
    assert np.corrcoef(ours.ravel(), reference.ravel())[0, 1] > 0.95
    edges = ndimage.grey_dilation(reference, size=3) != ndimage.grey_erosion(reference, size=3)
    assert not np.any((diff > 1 / 255) & ~edges)
    assert np.mean(diff > 1 / 255) < 0.01


def test_shepp_logan_matches_independent_rasteriser(x64):
    n = 96
    xs, ys = _centres(n)
    for modified in (True, False):
        want = np.maximum(_rasterise(phantoms.shepp_logan_ellipses(modified), xs, ys), 0)
        got = phantoms.shepp_logan(n, modified)
        assert got.dtype == jnp.float64
        np.testing.assert_allclose(got, want, atol=1e-12)


def test_shepp_logan_range_dtype_and_orientation():
    img = phantoms.shepp_logan(64)
    assert img.shape == (64, 64) and img.dtype == jnp.float32
    assert float(img.min()) == 0 and float(img.max()) == 1
    np.testing.assert_allclose(np.unique(np.round(np.asarray(img), 6)), [0, 0.1, 0.2, 0.3, 0.4, 1])
    orig = phantoms.shepp_logan(64, modified=False)
    assert float(orig.min()) == 0 and float(orig.max()) == 2
    assert phantoms.shepp_logan(8, dtype=jnp.float16).dtype == jnp.float16
    # The large bright ellipse (y0 = 0.35) is in the upper half; the small ones
    # (y0 = -0.605) in the lower.
    np.testing.assert_allclose(img[20, 32], 0.3, atol=1e-6)
    assert float(img[51, 30]) > 0.2


def test_supersampling_is_a_block_mean():
    fine = phantoms.shepp_logan(128)
    coarse = phantoms.shepp_logan(32, supersample=4)
    np.testing.assert_allclose(coarse, fine.reshape(32, 4, 32, 4).mean(axis=(1, 3)), atol=1e-6)
    assert float(coarse.min()) >= 0 and float(coarse.max()) <= 1


def test_ellipse_area_and_position():
    n, s = 64, 8
    a, b = 0.5, 0.25
    img = phantoms.ellipse(n, 2.0, a, b, 0.3, -0.2, 0.7, supersample=s)
    area = float(img.sum()) / 2.0 * (2 / n) ** 2
    # Supersampled area error is O(perimeter * sub-pixel size).
    np.testing.assert_allclose(area, np.pi * a * b, rtol=0.01)
    rows, cols = np.nonzero(np.asarray(img))
    centre_x = -1 + (cols.mean() + 0.5) * 2 / n
    centre_y = 1 - (rows.mean() + 0.5) * 2 / n
    np.testing.assert_allclose([centre_x, centre_y], [0.3, -0.2], atol=0.03)


def test_ellipse_rotation_convention():
    # phi rotates the a-axis counter-clockwise: at phi = pi/4 a long thin ellipse lies along
    # the diagonal from bottom-left to top-right, i.e. from the last row to the first.
    img = np.asarray(phantoms.ellipse(33, 1.0, 0.9, 0.05, 0.0, 0.0, np.pi / 4))
    assert img[6, 26] == 1 and img[26, 6] == 1
    assert img[6, 6] == 0 and img[26, 26] == 0
    # A quarter turn swaps the axes.
    turned = phantoms.ellipse(33, 1.0, 0.3, 0.7, 0.0, 0.0, np.pi / 2)
    np.testing.assert_array_equal(turned, phantoms.ellipse(33, 1.0, 0.7, 0.3, 0.0, 0.0, 0.0))


def test_radon_ellipses_matches_quadrature():
    """The closed form against line integrals by the midpoint rule along each line."""
    ellipses = phantoms.shepp_logan_ellipses()
    angles = np.array([0.0, 0.4, np.pi / 2, 2.5])
    offsets = np.linspace(-0.95, 0.95, 9)
    got = np.asarray(phantoms.radon_ellipses(ellipses, angles, offsets))
    assert got.shape == (4, 9)
    m = 20_000
    t = -1.5 + (np.arange(m) + 0.5) * 3 / m
    for i, theta in enumerate(angles):
        for j, s in enumerate(offsets):
            x = s * np.cos(theta) - t * np.sin(theta)
            y = s * np.sin(theta) + t * np.cos(theta)
            total = 0.0
            for rho, a, b, x0, y0, phi in ellipses:
                u = (x - x0) * np.cos(phi) + (y - y0) * np.sin(phi)
                v = -(x - x0) * np.sin(phi) + (y - y0) * np.cos(phi)
                total += rho * np.count_nonzero((u / a) ** 2 + (v / b) ** 2 <= 1)
            # Each of at most 20 boundary crossings errs by at most one step, 3 / m.
            np.testing.assert_allclose(got[i, j], total * 3 / m, atol=20 * 3 / m)


def test_random_ellipses_shape_range_determinism():
    key = jax.random.key(0)
    x = phantoms.random_ellipses(key, 16, 3)
    assert x.shape == (3, 16, 16) and x.dtype == jnp.float32
    assert float(x.min()) >= 0
    np.testing.assert_allclose(x.max(axis=(1, 2)), 1.0)  # normalised per image
    np.testing.assert_array_equal(x, phantoms.random_ellipses(key, 16, 3))
    assert not np.array_equal(x, phantoms.random_ellipses(jax.random.key(1), 16, 3))
    assert len({np.asarray(img).tobytes() for img in x}) == 3  # the images differ
    # Traces under jit with n and batch static and a traced key. (Lowered, not compiled: the
    # function is itself jitted, so eager calls already run the compiled program.)
    lowered = jax.jit(phantoms.random_ellipses, static_argnums=(1, 2)).lower(key, 16, 3)
    assert lowered.out_info.shape == (3, 16, 16)


def test_random_ellipses_options(x64):
    key = jax.random.key(3)
    x = phantoms.random_ellipses(key, 24, 2, mean_ellipses=5, max_ellipses=8, interior=True)
    assert x.dtype == jnp.float64 and x.shape == (2, 24, 24)
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    with pytest.raises(ValueError, match="`n`"):
        phantoms.random_ellipses(key, 0, 2)
    with pytest.raises(ValueError, match="`batch`"):
        phantoms.random_ellipses(key, 8, 2.5)
    with pytest.raises(ValueError, match="`mean_ellipses`"):
        phantoms.random_ellipses(key, 8, 2, mean_ellipses=0)
    with pytest.raises(ValueError, match="`dtype`"):
        phantoms.shepp_logan(8, dtype=jnp.int32)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), mean=st.floats(1.0, 50.0))
def test_random_ellipses_property(seed, mean):
    """Every image is in [0, 1] and is either all zero or peaks at exactly 1."""
    # A fixed cap (the default for mean 50) keeps one compiled program for all draws.
    key = jax.random.key(seed)
    x = np.asarray(phantoms.random_ellipses(key, 16, 3, mean_ellipses=mean, max_ellipses=86))
    assert np.all((x >= 0) & (x <= 1))
    peaks = x.max(axis=(1, 2))
    assert np.all((peaks == 0) | (np.abs(peaks - 1) < 1e-6))


def test_camera():
    pytest.importorskip("skimage")
    img = phantoms.camera()
    assert img.shape == (512, 512) and img.dtype == jnp.float32
    assert float(img.min()) == 0 and float(img.max()) == 1
    small = phantoms.camera(64)
    assert small.shape == (64, 64)
    assert 0 <= float(small.min()) and float(small.max()) <= 1
    # Anti-aliased shrinking keeps the mean grey level.
    np.testing.assert_allclose(small.mean(), img.mean(), atol=0.01)


def test_mri_slice():
    cbook = pytest.importorskip("matplotlib.cbook")
    img = phantoms.mri_slice()
    assert img.shape == (256, 256) and img.dtype == jnp.float32
    assert float(img.min()) == 0 and float(img.max()) == 1
    # The file is big-endian uint16 with values 0..215: each high byte (first of a pair)
    # is zero, and the image is those values over 215.
    with gzip.open(cbook.get_sample_data("s1045.ima.gz", asfileobj=False)) as f:
        raw = np.frombuffer(f.read(), np.uint8)
    assert raw.size == 2 * 256 * 256 and not raw[0::2].any()
    np.testing.assert_allclose(img, raw[1::2].reshape(256, 256) / 215.0, atol=1e-6)
    assert phantoms.mri_slice(100).shape == (100, 100)


def test_loaders_name_the_extra_when_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)
    with pytest.raises(ImportError, match=r"invjax\[demo\]"):
        phantoms.camera()
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"invjax\[demo\]"):
        phantoms.mri_slice()
