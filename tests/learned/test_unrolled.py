"""LearnedPrimalDual: the forward pass against a numpy re-implementation of Adler & Öktem's
iteration (dense operator matrix, scipy correlations), float64 gradients against central
differences, batching, complex (MRI) operators, saving, and bad input."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.signal import correlate2d

import invjax as ij
from invjax.learned import LearnedPrimalDual
from tests.conftest import x64_enabled


def _ct(n=8, angles=5):
    return ij.operators.ParallelBeam2D((n, n), np.linspace(0, np.pi, angles, endpoint=False))


def _mri(n=8, coils=None):
    rng = np.random.default_rng(0)
    mask = rng.random((n, n)) < 0.5
    sens = None
    if coils:
        sens = rng.standard_normal((coils, n, n)) + 1j * rng.standard_normal((coils, n, n))
        sens = sens / np.sqrt(np.sum(np.abs(sens) ** 2, axis=0, keepdims=True))
    return ij.operators.CartesianMRI(mask, sensitivities=sens)


def _np_block(params, x):
    ws, bs, alphas = [[np.asarray(a, np.float64) for a in group] for group in params]
    for i, (w, b) in enumerate(zip(ws, bs)):
        x = np.stack([sum(correlate2d(x[c], w[o, c], mode="same") for c in range(x.shape[0])) + b[o]
                      for o in range(w.shape[0])])
        if i < len(ws) - 1:
            x = np.where(x >= 0, x, alphas[i][:, None, None] * x)
    return x


def _split(z):
    """complex (k, H, W) -> real (2k, H, W), real unchanged."""
    return np.concatenate([z.real, z.imag]) if np.iscomplexobj(z) else z


def _join(ch, cplx):
    return ch[: len(ch) // 2] + 1j * ch[len(ch) // 2 :] if cplx else ch


def reference(net: LearnedPrimalDual, y):
    """Adler & Öktem's iteration in numpy, with the operator as a dense matrix."""
    op = net.op
    M = np.asarray(op.as_matrix(), np.complex128)
    in_shape, out_shape = tuple(op.in_shape), tuple(op.out_shape)
    cin, cout = np.iscomplexobj(np.zeros((), op.dtype)), np.iscomplexobj(np.zeros((), op.out_dtype))
    s = 1.0 / net.op_norm

    def img(ch):  # first primal channel(s) -> image vector
        return _join(ch, cin).reshape(-1)

    def dat(v):
        v = v.reshape(out_shape)
        v = v if len(out_shape) == 3 else v[None]
        return _split(v if cout else v.real)

    g = dat(np.asarray(y) * s)
    ic, dc = net.channels
    f = np.zeros((net.n_primal * ic,) + in_shape)
    h = np.zeros((net.n_dual * dc,) + g.shape[1:])
    for i in range(net.iterations):
        p = jax.tree.map(lambda a: np.asarray(a[i]), net.primal)
        d = jax.tree.map(lambda a: np.asarray(a[i]), net.dual)
        Kf = dat(M @ img(f[:ic]) * s)
        h = h + _np_block(d, np.concatenate([h, Kf, g]))
        hv = _join(h[:dc], cout).reshape(-1)
        KTh = (M.conj().T @ hv * s).reshape(in_shape)
        f = f + _np_block(p, np.concatenate([f, _split(KTh[None] if cin else KTh.real[None])]))
    return _join(f[:ic], cin).reshape(in_shape)


@pytest.mark.parametrize("kind", ["ct", "mri", "mri-coils"])
def test_forward_matches_numpy_reference(kind):
    with x64_enabled():
        op = {"ct": _ct, "mri": _mri, "mri-coils": lambda: _mri(coils=2)}[kind]()
        net = LearnedPrimalDual(op, iterations=3, n_primal=2, n_dual=3, width=4, dtype=jnp.float64,
                                key=jax.random.key(1))
        # make the untrained network's updates large enough to matter
        net = jax.tree.map(lambda a: a * 5 if a.ndim == 5 else a, net)
        x = ij.phantoms.shepp_logan(8).astype(op.dtype)
        y = op(x)
        got = np.asarray(net(y))
        want = reference(net, np.asarray(y))
        assert got.dtype == (np.complex128 if kind != "ct" else np.float64)
        assert np.abs(want).max() > 1e-2  # not a trivially zero output
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-11)


def test_gradient_matches_central_differences():
    with x64_enabled():
        op = _ct()
        net = LearnedPrimalDual(op, iterations=2, n_primal=2, n_dual=2, width=3, dtype=jnp.float64,
                                key=jax.random.key(2))
        x = ij.phantoms.shepp_logan(8)
        y = op(x)

        def loss(w_p, w_d, alpha):
            m = eqx.tree_at(lambda m: (m.primal[0][-1], m.dual[0][0], m.primal[2][0]), net, (w_p, w_d, alpha))
            return jnp.sum((m(y) - x) ** 2)

        args = (net.primal[0][-1], net.dual[0][0], net.primal[2][0])
        grads = jax.grad(loss, argnums=(0, 1, 2))(*args)
        rng = np.random.default_rng(0)
        for i, (a, g) in enumerate(zip(args, grads)):
            d = rng.standard_normal(a.shape)
            # rounding in the float64 loss (~1e-16 |loss| / eps) is ~1e-9 of the 2.6e-3 directional
            # derivative at eps = 1e-6, which a change of summation order tipped past rtol 1e-6;
            # at 1e-5 rounding is 10x smaller and the O(eps^2) truncation still ~1e-10
            eps = 1e-5
            plus = [b + eps * d if j == i else b for j, b in enumerate(args)]
            minus = [b - eps * d if j == i else b for j, b in enumerate(args)]
            fd = (loss(*plus) - loss(*minus)) / (2 * eps)
            np.testing.assert_allclose(float(jnp.vdot(g, d)), float(fd), rtol=1e-6)


def test_batch_jit_and_vmap_agree_with_single_calls():
    op = _ct(16, 6)
    net = LearnedPrimalDual(op, iterations=2, width=8, key=jax.random.key(3))
    xs = ij.phantoms.random_ellipses(jax.random.key(4), 16, 3)
    ys = jax.vmap(op)(xs)
    single = np.stack([np.asarray(net(y)) for y in ys])
    np.testing.assert_allclose(np.asarray(net(ys)), single, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(np.asarray(jax.jit(jax.vmap(net))(ys)), single, rtol=2e-5, atol=2e-6)


def test_bad_input_is_named():
    op = _ct()
    with pytest.raises(ValueError, match="`iterations` must be an int >= 1"):
        LearnedPrimalDual(op, iterations=0, key=jax.random.key(0))
    with pytest.raises(TypeError, match="`op` must be an invjax LinearOperator"):
        LearnedPrimalDual(np.eye(3), key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"`op` must act on 2-D images"):
        LearnedPrimalDual(ij.operators.Dense(np.eye(3)), key=jax.random.key(0))
    net = LearnedPrimalDual(op, iterations=1, width=4, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"`y` must have shape \(5, 12\)"):
        net(jnp.zeros((5, 11)))
    with pytest.raises(ValueError, match=r"`y` must have shape"):
        eqx.filter_jit(net)(jnp.zeros((2, 5, 11)))
    # another CT size is fine (convolutions do not care) ...
    bigger = net.with_operator(_ct(12, 7))
    assert bigger(bigger.op(jnp.ones((12, 12)))).shape == (12, 12)
    # ... a complex operator is not: the channel counts differ
    with pytest.raises(ValueError, match=r"`op` gives \(image, data\) channels \(2, 2\).*built for \(1, 1\)"):
        net.with_operator(_mri())


def test_save_load_round_trip(tmp_path):
    op = _ct()
    net = LearnedPrimalDual(op, iterations=2, width=4, key=jax.random.key(5))
    net = jax.tree.map(lambda a: a + 0.01, net)
    ij.learned.save(tmp_path / "lpd", net, {"note": "test"})
    back = ij.learned.load(tmp_path / "lpd")
    y = op(ij.phantoms.shepp_logan(8))
    np.testing.assert_array_equal(np.asarray(back(y)), np.asarray(net(y)))
    assert back.op == op and back.op_norm == net.op_norm


def test_training_reduces_the_loss_and_resumes_bit_identically(tmp_path):
    op = _ct(16, 6)
    net = LearnedPrimalDual(op, iterations=2, width=8, key=jax.random.key(6))
    loss = ij.learned.supervised_loss(op, relative_noise=0.01)
    batch = ij.phantoms.random_ellipses(jax.random.key(8), 16, 2)
    data = lambda key, step: batch  # noqa: E731  (one batch: the loss must fall)
    opt = optax.adam(1e-2)
    full, hist = ij.learned.train(net, loss, data, opt, 12, key=jax.random.key(7), progress=False)
    assert hist.loss[-1] < 0.7 * hist.loss[0]
    ij.learned.train(net, loss, data, opt, 6, key=jax.random.key(7), checkpoint_dir=tmp_path, progress=False)
    resumed, _ = ij.learned.train(net, loss, data, opt, 12, key=jax.random.key(7), checkpoint_dir=tmp_path,
                                  progress=False)
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_shipped_lpd_ct64_reconstructs_shepp_logan_far_better_than_fbp():
    assert "lpd-ct64" in ij.learned.available()
    net = ij.learned.pretrained("lpd-ct64")
    op = ij.operators.ParallelBeam2D((64, 64), np.linspace(0, np.pi, 30, endpoint=False))
    assert net.op == op  # the documented geometry
    meta = ij.learned.metadata("lpd-ct64")
    assert meta["steps"] > 0 and "trained_with" in meta
    x = jnp.stack([ij.phantoms.shepp_logan(64), ij.phantoms.random_ellipses(jax.random.key(9), 64, 1)[0]])
    ys = ij.learned.measure(op, x, key=jax.random.key(10), relative_noise=0.05)
    out = eqx.filter_jit(jax.vmap(net))(ys)
    for i in range(2):
        fbp = float(ij.metrics.psnr(ij.operators.fbp(op, ys[i]), x[i], data_range=1.0))
        lpd = float(ij.metrics.psnr(out[i], x[i], data_range=1.0))
        assert lpd > fbp + 5, (i, lpd, fbp)
    np.testing.assert_allclose(np.asarray(out[0]), np.asarray(net(ys[0])), rtol=1e-4, atol=1e-5)
