"""DnCNN: convolutions against scipy, the spectral-normalisation bound against power iteration
with the exact transpose, the residual's Lipschitz bound, transforms, dtypes and errors."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.signal import correlate2d

from invjax.learned.networks.dncnn import DnCNN, conv_operator_norm


def _random_params(net, rng, scale=0.3):
    """The same architecture with random weights and biases (biases are zero at init)."""
    ws = tuple(jnp.asarray(scale * rng.standard_normal(w.shape), w.dtype) for w in net.weights)
    bs = tuple(jnp.asarray(scale * rng.standard_normal(b.shape), b.dtype) for b in net.biases)
    return eqx.tree_at(lambda m: (m.weights, m.biases), net, (ws, bs))


def _scipy_conv(x, w, b):
    """``(C_in, H, W) -> (C_out, H, W)`` with scipy: zero-padded 'same' cross-correlation + bias."""
    def channel(o):
        return sum(correlate2d(x[c], w[o, c], mode="same", boundary="fill") for c in range(x.shape[0])) + b[o]

    return np.stack([channel(o) for o in range(w.shape[0])])


@pytest.mark.parametrize("channels,noise_input", [(1, False), (2, True)])
def test_one_layer_is_y_minus_a_correlation_as_scipy(rng, channels, noise_input):
    net = _random_params(DnCNN(channels, depth=1, noise_level_input=noise_input, key=jax.random.PRNGKey(0)), rng)
    y = rng.standard_normal((channels, 9, 7)).astype(np.float32)
    sigma = 0.3
    inp = np.concatenate([y, np.full((1, 9, 7), sigma, np.float32)]) if noise_input else y
    expected = y - _scipy_conv(inp, np.asarray(net.weights[0]), np.asarray(net.biases[0]))
    out = net(y, sigma)
    assert out.shape == y.shape and out.dtype == jnp.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    if channels == 1:  # a 2-D image in, a 2-D image out
        np.testing.assert_allclose(net(y[0], sigma), expected[0], rtol=1e-5, atol=1e-5)


def test_three_layers_with_relu_match_scipy(rng):
    net = _random_params(DnCNN(depth=3, width=4, key=jax.random.PRNGKey(1)), rng)
    y = rng.standard_normal((10, 8)).astype(np.float32)
    h = y[None]
    for i, (w, b) in enumerate(zip(net.weights, net.biases)):
        h = _scipy_conv(h, np.asarray(w), np.asarray(b))
        if i < 2:
            h = np.maximum(h, 0)
    np.testing.assert_allclose(net.residual(y), h[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(net.denoise(y), y - h[0], rtol=1e-4, atol=1e-5)


def _power_norm(apply, shape, iters=100, seed=0):
    """``||apply||`` by power iteration on ``apply^T apply`` with the exact transpose."""
    transpose = jax.linear_transpose(apply, jnp.zeros(shape, jnp.float32))
    v = jax.random.normal(jax.random.PRNGKey(seed), shape, jnp.float32)

    def body(_, v):
        w = transpose(apply(v))[0]
        return w / jnp.linalg.norm(w)

    run = jax.jit(lambda v: jnp.linalg.norm(apply(jax.lax.fori_loop(0, iters, body, v / jnp.linalg.norm(v)))))
    return float(run(v))


def _symbol_sup(w, grid=64):
    """``max_w sigma_max(K^(w))`` from an SVD on a fine frequency grid (numpy)."""
    c_out, c_in, kh, kw = w.shape
    padded = np.zeros((c_out, c_in, grid, grid))
    padded[:, :, :kh, :kw] = w
    sym = np.fft.fft2(padded).transpose(2, 3, 0, 1).reshape(-1, c_out, c_in)
    return np.linalg.svd(sym, compute_uv=False)[:, 0].max()


def test_conv_operator_norm_against_svd_of_the_symbol(rng):
    for shape in [(1, 8, 3, 3), (16, 16, 3, 3)]:
        w = rng.standard_normal(shape) * np.sqrt(2 / (9 * shape[1]))
        est = float(conv_operator_norm(jnp.asarray(w, jnp.float32)))
        exact = _symbol_sup(w)
        # the estimate approaches the supremum from below (grid and power iteration)
        assert 0.99 * exact <= est <= exact * (1 + 1e-5), (shape, est, exact)


@pytest.mark.slow  # a few seconds of compilation; kept out of the 10-minute default run
def test_spectral_normalised_convs_have_operator_norm_at_most_one():
    net = DnCNN(depth=2, width=8, noise_level_input=True, spectral_norm=True, key=jax.random.PRNGKey(2))
    hw = (20, 20)
    for w in net.normalised_weights():
        def apply(x, w=w):
            dims = ("NCHW", "OIHW", "NCHW")
            return jax.lax.conv_general_dilated(x[None], w, (1, 1), "SAME", dimension_numbers=dims)[0]

        norm = _power_norm(apply, (w.shape[1],) + hw)
        assert norm <= 1 + 1e-3, norm
        assert norm >= 0.9, norm  # normalised, not just bounded: close to 1 on a 20x20 image


def _jacobian_norm(f, y, iters=40):
    """The largest singular value of the Jacobian of ``f`` at ``y``, by power iteration (JVP/VJP)."""

    @jax.jit
    def run(y, v):
        _, vjp = jax.vjp(f, y)

        def body(_, v):
            w = vjp(jax.jvp(f, (y,), (v,))[1])[0]
            return w / jnp.linalg.norm(w)

        v = jax.lax.fori_loop(0, iters, body, v / jnp.linalg.norm(v))
        return jnp.linalg.norm(jax.jvp(f, (y,), (v,))[1])

    return float(run(y, jax.random.normal(jax.random.PRNGKey(5), y.shape, y.dtype)))


def test_spectral_norm_bounds_the_residual_lipschitz_constant():
    eps = 0.5
    # depth 4: the hidden layers take the looped normalisation
    net = DnCNN(depth=4, width=8, noise_level_input=True, spectral_norm=True, lipschitz=eps, key=jax.random.PRNGKey(3))
    assert net.residual_lipschitz == eps
    y = jax.random.uniform(jax.random.PRNGKey(4), (16, 16), jnp.float32)
    f = lambda x: net.residual(x, 0.1)  # noqa: E731
    # the largest singular value of the Jacobian bounds ||N(y) - N(y')|| / ||y - y'|| nearby
    assert _jacobian_norm(f, y) <= eps * (1 + 1e-3)
    assert DnCNN(depth=2, width=4, key=jax.random.PRNGKey(0)).residual_lipschitz is None


def test_spectral_norm_is_scale_invariant_in_the_weights(rng):
    net = DnCNN(depth=3, width=4, spectral_norm=True, bias=False, key=jax.random.PRNGKey(6))
    scaled = eqx.tree_at(lambda m: m.weights, net, tuple(3.0 * w for w in net.weights))
    y = rng.standard_normal((12, 12)).astype(np.float32)
    apply = eqx.filter_jit(lambda m, y: m(y))
    np.testing.assert_allclose(apply(net, y), apply(scaled, y), rtol=1e-4, atol=1e-5)


def test_noise_level_input_serves_several_levels_and_blind_ignores_sigma(rng):
    y = rng.standard_normal((12, 12)).astype(np.float32)
    aware = _random_params(DnCNN(depth=2, width=4, noise_level_input=True, key=jax.random.PRNGKey(7)), rng)
    assert not np.allclose(aware(y, 0.05), aware(y, 0.2))
    # a per-pixel map equal to the constant gives the constant's result
    np.testing.assert_allclose(aware(y, jnp.full((12, 12), 0.2)), aware(y, 0.2), rtol=1e-6)
    blind = DnCNN(depth=2, width=4, key=jax.random.PRNGKey(7))
    np.testing.assert_array_equal(blind(y, 0.05), blind(y, 0.2))
    np.testing.assert_array_equal(blind(y), blind(y, 0.2))


def test_dtype_follows_input(x64, rng):
    net = DnCNN(depth=2, width=4, key=jax.random.PRNGKey(0))
    y64 = rng.standard_normal((8, 8))
    assert net(jnp.asarray(y64)).dtype == jnp.float64
    assert net(jnp.asarray(y64, jnp.float32)).dtype == jnp.float32
    np.testing.assert_allclose(net(jnp.asarray(y64)), net(jnp.asarray(y64, jnp.float32)), rtol=1e-4, atol=1e-5)
    # integers are not an image on the [0, 1] scale: the denoiser contract refuses them (as denoise)
    with pytest.raises(TypeError, match=r"DnCNN: `y` must be a float image on the \[0, 1\] scale, got dtype int32"):
        net(np.ones((8, 8), np.int32))


def test_jit_vmap_and_parameter_gradient(x64, rng):
    net = _random_params(DnCNN(depth=2, width=4, noise_level_input=True, key=jax.random.PRNGKey(8)), rng)
    net = jax.tree.map(lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a) else a, net)
    ys = jnp.asarray(rng.standard_normal((3, 10, 10)))
    sig = jnp.asarray([0.05, 0.1, 0.2])

    @eqx.filter_jit
    def loss(m):
        return jnp.sum(jax.vmap(m)(ys, sig) ** 2)

    # vmap (inside jit) against one call per image
    expected = sum(float(jnp.sum(net(y, s) ** 2)) for y, s in zip(ys, sig))
    np.testing.assert_allclose(float(loss(net)), expected, rtol=1e-12)
    grads = eqx.filter_jit(eqx.filter_grad(loss))(net)
    h = 1e-6
    for layer, index in ((0, (2, 1, 0, 2)), (1, (0, 3, 1, 1))):
        def shifted(t, layer=layer, index=index):
            return eqx.tree_at(lambda m: m.weights[layer], net, net.weights[layer].at[index].add(t))

        fd = (loss(shifted(h)) - loss(shifted(-h))) / (2 * h)
        np.testing.assert_allclose(grads.weights[layer][index], fd, rtol=1e-6)


def test_spectral_normalisation_gradient_matches_central_differences(x64, rng):
    # the power-iteration vectors are held constant in the gradient: exact at convergence
    w = jnp.asarray(rng.standard_normal((4, 3, 3, 3)))

    @jax.jit
    def norm(w):
        return conv_operator_norm(w, iters=200)

    g = jax.grad(norm)(w)
    e = jnp.zeros_like(w).at[1, 2, 0, 1].set(1.0)
    fd = (norm(w + 1e-6 * e) - norm(w - 1e-6 * e)) / 2e-6
    np.testing.assert_allclose(g[1, 2, 0, 1], fd, rtol=1e-5)
    # a norm is positively homogeneous of degree 1: <grad, w> = ||W||
    np.testing.assert_allclose(jnp.sum(g * w), norm(w), rtol=1e-10)


def test_bad_inputs_raise_clear_errors():
    net = DnCNN(depth=2, width=4, noise_level_input=True, key=jax.random.PRNGKey(0))
    y = jnp.zeros((8, 8))
    with pytest.raises(ValueError, match=r"DnCNN: `y` must be one image of shape \(H, W\) or \(1, H, W\).*got shape "
                                         r"\(3, 8, 8\); for a batch use DnCNN.denoise"):
        net(jnp.zeros((3, 8, 8)), 0.1)
    with pytest.raises(ValueError, match=r"`y` must have shape \(2, H, W\).*got shape \(8, 8\)"):
        DnCNN(2, depth=2, width=4, key=jax.random.PRNGKey(0))(y)
    with pytest.raises(ValueError, match=r"DnCNN: `sigma` must be finite and > 0 .*got -0.1"):
        net(y, -0.1)
    # __call__ and residual go through the checks of every denoiser (learned/_denoise.py)
    with pytest.raises(ValueError, match=r"DnCNN.residual: `sigma` must be <= 1: .*25 / 255"):
        net.residual(y, 25.0)
    with pytest.raises(ValueError, match=r"DnCNN: `y` has values far outside the \[0, 1\] image scale"):
        net(y + 255.0, 0.1)
    with pytest.raises(ValueError, match=r"DnCNN: a `sigma` map must be finite, >= 0 and <= 1"):
        net(y, jnp.full((8, 8), 2.0))
    with pytest.raises(TypeError, match=r"`sigma` is required"):
        net(y)
    with pytest.raises(ValueError, match=r"`sigma` must be a scalar or have shape \(8, 8\).*got shape \(4,\)"):
        net(y, jnp.ones(4))
    with pytest.raises(TypeError, match=r"`y` must be real, got dtype complex64"):
        net(y.astype(jnp.complex64), 0.1)
    with pytest.raises(ValueError, match=r"`depth` must be an int >= 1, got 0"):
        DnCNN(depth=0, key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"`lipschitz` bounds the residual only with spectral_norm=True"):
        DnCNN(depth=2, lipschitz=0.5, key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"`lipschitz` must be finite and > 0, got -1.0"):
        DnCNN(depth=2, spectral_norm=True, lipschitz=-1.0, key=jax.random.PRNGKey(0))
    with pytest.raises(TypeError, match="key"):
        DnCNN(depth=2)  # the key is explicit
