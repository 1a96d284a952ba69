"""Saving and loading learned models, the shipped pretrained ones, and the shared
``denoise(y, sigma)`` contract (one image or a batch) against per-image calls."""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import invjax as ij
from invjax.learned import ConvexRidge, DnCNN

SHIPPED = ("crr-nn", "dncnn", "wcrr-nn")


def _ridge():
    m = ConvexRidge(key=jax.random.key(0), channels=(1, 2, 4), kernel_size=3, knots=7, strength=30.0,
                    noise_calibration=((0.05, 0.8), (0.1, 1.2)))
    rng = np.random.default_rng(0)
    return eqx.tree_at(lambda t: t.spline.raw_slopes, m, jnp.asarray(rng.uniform(0, 1, m.spline.raw_slopes.shape), jnp.float32))


def _dncnn():
    return DnCNN(depth=3, width=4, noise_level_input=True, key=jax.random.key(1))


def _images(n=3, size=12):
    return np.random.default_rng(2).uniform(0, 1, (n, size, size)).astype(np.float32)


@pytest.mark.parametrize("make", [_ridge, _dncnn], ids=["ridge", "dncnn"])
def test_save_load_round_trip(tmp_path, make):
    model = make()
    path = ij.learned.save(tmp_path / "m", model, {"steps": 3})
    assert path == tmp_path / "m.eqx" and (tmp_path / "m.json").exists()
    back = ij.learned.load(tmp_path / "m.eqx")
    assert type(back) is type(model)
    for a, b in zip(jax.tree.leaves(model), jax.tree.leaves(back)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    y = _images(1)[0]
    np.testing.assert_array_equal(np.asarray(back.denoise(y, 0.07)), np.asarray(model.denoise(y, 0.07)))
    assert json.loads((tmp_path / "m.json").read_text())["metadata"] == {"steps": 3}


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no saved model"):
        ij.learned.load(tmp_path / "missing")
    ij.learned.save(tmp_path / "m", _dncnn())
    good = (tmp_path / "m.eqx").read_bytes()
    (tmp_path / "m.eqx").write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(ValueError, match=r"m.eqx' are corrupt or do not fit the DnCNN"):
        ij.learned.load(tmp_path / "m")
    (tmp_path / "m.eqx").write_bytes(good)
    record = json.loads((tmp_path / "m.json").read_text())
    record["config"]["width"] = 5  # weights of another shape
    (tmp_path / "m.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="corrupt or do not fit"):
        ij.learned.load(tmp_path / "m")
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a saved model description"):
        ij.learned.load(tmp_path / "m")
    with pytest.raises(TypeError, match="`model` must be a ConvexRidge, DnCNN or LearnedPrimalDual"):
        ij.learned.save(tmp_path / "x", object())
    with pytest.raises(ValueError, match=r"`name` must be one of \("):
        ij.learned.pretrained("no-such-model")


@pytest.mark.parametrize("make", [_ridge, _dncnn], ids=["ridge", "dncnn"])
def test_denoise_batches_like_single_images(make):
    """A batch with one sigma or one per image equals the per-image calls; jit and vmap agree."""
    model = make()
    ys = _images()
    sigmas = np.array([0.03, 0.06, 0.1], np.float32)
    batch = np.asarray(model.denoise(ys, sigmas))
    singles = np.stack([np.asarray(model.denoise(y, s)) for y, s in zip(ys, sigmas)])
    np.testing.assert_allclose(batch, singles, rtol=1e-5, atol=1e-6)
    one = np.asarray(model.denoise(ys, 0.06))
    np.testing.assert_allclose(one[1], singles[1], rtol=1e-5, atol=1e-6)
    jitted = eqx.filter_jit(lambda m, y, s: m.denoise(y, s))(model, ys, sigmas)
    np.testing.assert_allclose(np.asarray(jitted), singles, rtol=1e-5, atol=1e-6)
    mapped = jax.vmap(model.denoise)(ys, sigmas)
    np.testing.assert_allclose(np.asarray(mapped), singles, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"`sigma` must be finite and > 0"):
        model.denoise(ys, np.array([0.1, 0.0, 0.1]))
    with pytest.raises(ValueError, match=r"`y` must be one image"):
        model.denoise(ys[None, None], 0.1)


def test_ridge_calibration_interpolates_in_log_sigma():
    m = _ridge()
    np.testing.assert_allclose(float(m.calibration_factor(0.01)), 0.8)  # held beyond the ends
    np.testing.assert_allclose(float(m.calibration_factor(0.5)), 1.2)
    mid = np.sqrt(0.05 * 0.1)  # halfway in log sigma
    np.testing.assert_allclose(float(m.calibration_factor(mid)), 1.0, rtol=1e-6)
    y = _images(1)[0]
    np.testing.assert_allclose(np.asarray(m.denoise(y, mid)), np.asarray(m.prox(y, mid**2)), rtol=1e-5, atol=1e-6)


# ---- the shipped models ------------------------------------------------------------------------------
def test_shipped_models_are_listed_documented_and_load():
    assert set(SHIPPED) <= set(ij.learned.available())
    for name in SHIPPED:
        info = ij.learned.metadata(name)
        assert "python benchmarks/train_denoisers.py" in info["command"]
        assert info["steps"] > 0 and info["wall_s"] > 0 and info["machine"]
    m = ij.learned.pretrained("crr-nn")
    assert isinstance(m, ConvexRidge) and not m.weakly_convex
    assert ij.learned.pretrained("wcrr-nn").weakly_convex
    assert isinstance(ij.learned.pretrained("dncnn"), DnCNN)


@pytest.mark.slow  # ~20 s for the three models; the default suite is near its 10-minute budget
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_denoisers_denoise_a_natural_image(name):
    """On scikit-image's camera (not in the training folder) at sigma = 25/255, every shipped
    denoiser gains at least 5 dB over the noisy input (their held-out means are in the README)."""
    from skimage import data

    x = np.asarray(data.camera()[128:256, 128:256], np.float32) / 255
    sigma = 25 / 255
    y = x + sigma * np.random.default_rng(0).standard_normal(x.shape).astype(np.float32)
    out = np.asarray(ij.learned.pretrained(name).denoise(y, sigma))
    gain = ij.metrics.psnr(out, x, data_range=1.0) - ij.metrics.psnr(y, x, data_range=1.0)
    assert float(gain) > 5.0


@pytest.mark.parametrize("name", ["crr-nn", "wcrr-nn"])
def test_shipped_ridges_convexity_on_random_segments(name):
    """R(t x + (1 - t) z) <= t R(x) + (1 - t) R(z) (+ the weak-convexity allowance
    rho t (1 - t) ||x - z||^2 / 2 for WCRR-NN, with rho the model's stated modulus) on random
    segments between natural-image crops and noisy copies."""
    from skimage import data

    m = ij.learned.pretrained(name)
    rho = float(m.weak_convexity)
    img = np.asarray(data.camera(), np.float32) / 255
    rng = np.random.default_rng(1)
    for i in range(24):
        r, c = rng.integers(0, 512 - 48, 2)
        x = img[r : r + 48, c : c + 48]
        z = x + rng.uniform(0.02, 0.3) * rng.standard_normal(x.shape).astype(np.float32)
        t = rng.uniform(0.1, 0.9)
        lhs = float(m(t * x + (1 - t) * z))
        rhs = t * float(m(x)) + (1 - t) * float(m(z))
        allowance = rho * t * (1 - t) * float(np.sum((x - z) ** 2)) / 2
        assert lhs <= rhs + allowance + 1e-4 * abs(rhs), (i, lhs, rhs, allowance)
    if name == "crr-nn":
        assert rho == 0.0
    else:
        assert rho > 0
