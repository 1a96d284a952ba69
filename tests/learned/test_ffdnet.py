"""FFDNet and the shared channels-last convolution: forward against scipy/numpy, derivatives
against plain autodiff and float64 central differences, transforms, and the input contract."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.signal import correlate2d

from invjax.learned import FFDNet
from tests.conftest import x64_enabled
from invjax.learned.networks._conv import conv2d, pixel_shuffle, pixel_unshuffle


def _scipy_conv_hwc(x, w, b):
    """``(H, W, C_in) -> (H, W, C_out)`` zero-padded 'same' cross-correlation with a
    ``(3, 3, C_in, C_out)`` kernel, by scipy."""
    out = np.stack(
        [sum(correlate2d(x[..., c], w[:, :, c, o], mode="same", boundary="fill") for c in range(x.shape[-1])) + b[o]
         for o in range(w.shape[-1])], axis=-1)
    return out


def _numpy_ffdnet(net, y, sigma):
    """An independent forward pass: 2x2 split by strided slicing, scipy correlations, merge."""
    h, w = y.shape
    yp = np.pad(y, ((0, h % 2), (0, w % 2)), mode="reflect")
    # sub-image k = (i, j) of each 2x2 block, in the order (0,0), (0,1), (1,0), (1,1)
    subs = np.stack([yp[i::2, j::2] for i in range(2) for j in range(2)], axis=-1)
    x = np.concatenate([subs, np.full(subs.shape[:2] + (1,), sigma)], axis=-1)
    for i, (wt, b) in enumerate(zip(net.weights, net.biases)):
        x = _scipy_conv_hwc(x, np.asarray(wt, np.float64), np.asarray(b, np.float64))
        if i < net.depth - 1:
            x = np.maximum(x, 0)
    noise = np.zeros_like(yp)
    for k, (i, j) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        noise[i::2, j::2] = x[..., k]
    return y - noise[:h, :w]


def _random(net, rng, scale=0.3):
    ws = tuple(jnp.asarray(scale * rng.standard_normal(w.shape), w.dtype) for w in net.weights)
    bs = tuple(jnp.asarray(0.1 * rng.standard_normal(b.shape), b.dtype) for b in net.biases)
    return eqx.tree_at(lambda m: (m.weights, m.biases), net, (ws, bs))


@pytest.mark.parametrize("shape", [(10, 8), (9, 7)])
def test_ffdnet_forward_matches_an_independent_numpy_pass(rng, shape):
    net = _random(FFDNet(depth=3, width=5, key=jax.random.PRNGKey(0)), rng)
    y = rng.uniform(0, 1, shape).astype(np.float32)
    out = net.denoise(y, 0.1)
    assert out.shape == shape and out.dtype == jnp.float32
    np.testing.assert_allclose(out, _numpy_ffdnet(net, y.astype(np.float64), 0.1), rtol=1e-4, atol=1e-5)


def test_pixel_shuffle_inverts_unshuffle_and_orders_blocks(rng):
    x = jnp.asarray(rng.standard_normal((2, 6, 4, 3)))
    sub = pixel_unshuffle(x)
    assert sub.shape == (2, 3, 2, 12)
    np.testing.assert_array_equal(pixel_shuffle(sub), x)
    # channel (k, c) of the sub-images is pixel (2i + k // 2, 2j + k % 2) of channel c
    np.testing.assert_array_equal(sub[..., 1 * 3 + 2], x[:, 0::2, 1::2, 2])
    np.testing.assert_array_equal(sub[..., 2 * 3 + 0], x[:, 1::2, 0::2, 0])


def test_conv2d_matches_scipy_and_its_derivatives_match_autodiff_in_float64(rng):
    with x64_enabled():
        x = jnp.asarray(rng.standard_normal((2, 7, 6, 3)))
        w = jnp.asarray(rng.standard_normal((3, 3, 3, 5)))
        b = jnp.asarray(rng.standard_normal(5))
        out = conv2d(x, w, b)
        np.testing.assert_allclose(out[1], _scipy_conv_hwc(np.asarray(x[1]), np.asarray(w), np.asarray(b)), rtol=1e-12,
                                   atol=1e-12)

        def plain(x, w):
            return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

        def f(conv):
            return lambda x, w: jnp.sum(jnp.sin(conv(x, w)) * x.sum())

        g_ours = jax.grad(f(conv2d), (0, 1))(x, w)
        g_ref = jax.grad(f(plain), (0, 1))(x, w)
        for a, r in zip(g_ours, g_ref):
            np.testing.assert_allclose(a, r, rtol=1e-12, atol=1e-12)
        dx, dw = jnp.asarray(rng.standard_normal(x.shape)), jnp.asarray(rng.standard_normal(w.shape))
        t_ours = jax.jvp(f(conv2d), (x, w), (dx, dw))[1]
        t_ref = jax.jvp(f(plain), (x, w), (dx, dw))[1]
        np.testing.assert_allclose(t_ours, t_ref, rtol=1e-12)
        # and against central differences
        eps = 1e-6
        fd = (f(conv2d)(x + eps * dx, w + eps * dw) - f(conv2d)(x - eps * dx, w - eps * dw)) / (2 * eps)
        np.testing.assert_allclose(t_ours, fd, rtol=1e-7)


def test_conv2d_refuses_even_kernels():
    with pytest.raises(ValueError, match="odd"):
        conv2d(jnp.zeros((1, 4, 4, 1)), jnp.zeros((2, 2, 1, 1)))


def test_ffdnet_parameter_gradient_matches_central_differences_in_float64(rng):
    with x64_enabled():
        net = _random(FFDNet(depth=3, width=4, dtype=jnp.float64, key=jax.random.PRNGKey(1)), rng)
        y = jnp.asarray(rng.uniform(0, 1, (8, 10)))
        x = jnp.asarray(rng.uniform(0, 1, (8, 10)))

        def loss(m):
            return jnp.sum((m.denoise(y, 0.2) - x) ** 2)

        g = eqx.filter_grad(loss)(net)
        for layer, index in ((0, (1, 2, 0, 3)), (2, (0, 0, 3, 1))):
            def at(v):
                return eqx.tree_at(lambda m: m.weights[layer], net, net.weights[layer].at[index].set(v))

            v0 = net.weights[layer][index]
            fd = (loss(at(v0 + 1e-6)) - loss(at(v0 - 1e-6))) / 2e-6
            np.testing.assert_allclose(g.weights[layer][index], fd, rtol=1e-6)


def test_ffdnet_batch_jit_vmap_and_sigma_per_image_agree_with_single_calls(rng):
    net = _random(FFDNet(depth=3, width=4, key=jax.random.PRNGKey(2)), rng, scale=0.2)
    ys = rng.uniform(0, 1, (3, 12, 10)).astype(np.float32)
    sig = np.array([0.05, 0.1, 0.2], np.float32)
    single = np.stack([net.denoise(ys[i], sig[i]) for i in range(3)])
    np.testing.assert_allclose(net.denoise(ys, sig), single, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(eqx.filter_jit(net.denoise)(ys, sig), single, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jax.jit(lambda m, y, s: m.denoise(y, s))(net, ys, sig), single, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jax.vmap(net.denoise)(ys, sig), single, rtol=1e-5, atol=1e-6)
    # a (B, 1, H, W) batch keeps its layout
    assert net.denoise(ys[:, None], 0.1).shape == (3, 1, 12, 10)


def test_ffdnet_training_raises_held_out_psnr_with_the_library_loop():
    import optax

    import invjax as ij

    images = [np.asarray(im) for im in ij.learned.load_images()]
    data = ij.learned.patch_data(images[:4], 24, 8)
    net = FFDNet(depth=3, width=8, key=jax.random.PRNGKey(0))
    held = [images[-1][:64, :64]]
    validate = ij.learned.denoising_validation(held, 0.1, key=jax.random.PRNGKey(3))
    before = validate(net)
    net, _ = ij.learned.train(net, ij.learned.denoising_loss(0.1), data, optax.adam(3e-3), 80,
                              key=jax.random.PRNGKey(1), progress=False)
    after = validate(net)
    assert after > max(before, validate.noisy_psnr) + 1.0, (validate.noisy_psnr, before, after)
