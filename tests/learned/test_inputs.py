"""The denoiser input contract (issue: a user's first hour): plausible mistakes are clear errors
for every learned denoiser/prior — RGB images, integer images, 0..255 values, sigma in the
wrong units, non-finite pixels — outside and under ``jax.jit``; and training refuses to resume a
run whose settings changed."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import invjax as ij
from invjax.learned import ConvexRidge, DnCNN, FFDNet


def _models():
    key = jax.random.PRNGKey(0)
    return {
        "dncnn": DnCNN(depth=2, width=4, noise_level_input=True, key=key),
        "ffdnet": FFDNet(depth=2, width=4, key=key),
        "crr-nn": ConvexRidge(channels=(1, 2), key=key, prox_max_iters=5),
    }


MODELS = _models()


@pytest.fixture(params=sorted(MODELS))
def model(request):
    return MODELS[request.param]


def test_an_rgb_image_is_refused_with_how_to_convert(model):
    y = np.full((16, 16, 3), 0.5, np.float32)
    with pytest.raises(ValueError, match=r"RGB.*rgb2gray"):
        model.denoise(y, 0.1)


def test_an_integer_image_is_refused_with_the_fix(model):
    y = np.full((16, 16), 128, np.uint8)
    with pytest.raises(TypeError, match=r"integer|dtype uint8.*/ 255"):
        model.denoise(y, 0.1)


def test_a_0_255_float_image_is_refused(model):
    y = np.full((16, 16), 200.0, np.float32)
    with pytest.raises(ValueError, match=r"\[0, 1\].*y / 255"):
        model.denoise(y, 0.1)


def test_sigma_on_the_0_255_scale_is_refused_naming_the_units(model):
    with pytest.raises(ValueError, match=r"sigma.*<= 1.*25 / 255"):
        model.denoise(np.full((16, 16), 0.5, np.float32), 25.0)


def test_nan_pixels_are_refused(model):
    y = np.full((16, 16), 0.5, np.float32)
    y[3, 4] = np.nan
    with pytest.raises(ValueError, match=r"non-finite.*1 of 256"):
        model.denoise(y, 0.1)


@pytest.mark.parametrize("case", ["nan", "sigma_negative", "sigma_units", "range"])
def test_the_same_mistakes_under_jit_raise_readable_errors(case):
    net = MODELS["dncnn"]
    y = jnp.full((16, 16), 0.5)
    sigma = 0.1
    if case == "nan":
        y, pattern = y.at[0, 0].set(jnp.nan), "non-finite"
    elif case == "sigma_negative":
        sigma, pattern = -0.1, "sigma.*> 0"
    elif case == "sigma_units":
        sigma, pattern = 25.0, "sigma.*<= 1"
    else:
        y, pattern = y * 255, r"\[0, 1\]"
    with pytest.raises(Exception, match=pattern):
        jax.block_until_ready(jax.jit(lambda y, s: net.denoise(y, s))(y, sigma))


def test_valid_input_still_passes_under_jit_with_the_checks():
    net = MODELS["ffdnet"]
    y = jnp.full((2, 16, 16), 0.5)
    np.testing.assert_allclose(jax.jit(lambda y: net.denoise(y, 0.1))(y), net.denoise(y, 0.1), rtol=1e-6)


def test_denoising_loss_and_validation_take_any_denoiser_crr_nn_included():
    crr = MODELS["crr-nn"]
    batch = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (2, 12, 12)), jnp.float32)
    value = ij.learned.denoising_loss(0.1)(crr, batch, jax.random.PRNGKey(0))
    expected_noise = float(jnp.mean((batch + 0.1 * jax.random.normal(jax.random.split(jax.random.PRNGKey(0))[0],
                                                                      batch.shape) - batch) ** 2))
    # the prox removes part of the noise: the loss is finite, positive and below the noise's MSE
    assert 0 < float(value) < expected_noise
    validate = ij.learned.denoising_validation([np.asarray(batch[0])], 0.1, key=jax.random.PRNGKey(1))
    assert validate(crr) > validate.noisy_psnr


def test_resuming_with_changed_settings_is_an_error_naming_the_field(tmp_path):
    images = [np.asarray(im) for im in ij.learned.load_images()[:2]]
    data = ij.learned.patch_data(images, 16, 2)
    net = FFDNet(depth=2, width=4, key=jax.random.PRNGKey(0))
    loss = ij.learned.denoising_loss(0.1)
    common = dict(key=jax.random.PRNGKey(1), checkpoint_dir=tmp_path, checkpoint_every=2, progress=False)
    ij.learned.train(net, loss, data, optax.adam(1e-3), 2, config={"lr": 1e-3, "depth": 2}, **common)
    with pytest.raises(ValueError, match=r"other settings \(lr: checkpoint 0.001, now 0.002\)"):
        ij.learned.train(net, loss, data, optax.adam(2e-3), 4, config={"lr": 2e-3, "depth": 2}, **common)
    # the same settings resume
    _, hist = ij.learned.train(net, loss, data, optax.adam(1e-3), 4, config={"lr": 1e-3, "depth": 2}, **common)
    assert len(hist.loss) == 4


def test_plain_progress_lines_without_tqdm(monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "tqdm", None)  # tqdm not installed
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    images = [np.asarray(im) for im in ij.learned.load_images()[:2]]
    net = FFDNet(depth=2, width=4, key=jax.random.PRNGKey(0))
    ij.learned.train(net, ij.learned.denoising_loss(0.1), ij.learned.patch_data(images, 16, 2), optax.adam(1e-3), 4,
                     key=jax.random.PRNGKey(1), checkpoint_every=2)
    err = capsys.readouterr().err
    assert "train: step 2/4" in err and "train: step 4/4" in err and "loss=" in err
