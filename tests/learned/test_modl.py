"""MoDL and its MRI data: the data-consistency step against a dense solve, the whole network
against a dense numpy reference, central-difference gradients (both derivative modes), jit/vmap,
dtypes, errors; coil maps, variable-density masks and the brain-slice split."""

import functools
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import invjax as ij
from invjax.learned.networks.dncnn import DnCNN
from invjax.learned.networks.modl import MoDL
from invjax.learned import brain_slices, coil_sensitivities, variable_density_mask

N = 8


@functools.cache  # operators are immutable: build each once per session
def _operator(coils, dtype=jnp.complex64, seed=0):
    mask = variable_density_mask(N, 2, key=jax.random.PRNGKey(seed), center_fraction=0.25)
    sens = None if coils is None else coil_sensitivities(N, coils, key=jax.random.PRNGKey(seed + 1), dtype=dtype)
    return ij.operators.CartesianMRI(mask, sensitivities=sens, dtype=dtype)


def _random_biases(model, rng, scale=0.1):
    """Non-zero biases (they start at zero), so that the test exercises them."""
    bs = tuple(jnp.asarray(scale * rng.standard_normal(b.shape), b.dtype) for b in model.denoiser.biases)
    return eqx.tree_at(lambda m: m.denoiser.biases, model, bs)


def _model(op, rng, *, dtype=jnp.float32, **kw):
    kw = {"iterations": 2, "cg_iters": 6, "depth": 3, "width": 4, **kw}
    return _random_biases(MoDL(op, dtype=dtype, key=jax.random.PRNGKey(3), **kw), rng)


def _complex(rng, shape, dtype=np.complex64):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)


def _dense(op):
    return np.asarray(op.as_matrix(), np.complex128)


# ---- the data-consistency step and the network against dense linear algebra --------------------
@pytest.mark.parametrize("coils", [None, 3], ids=["single-coil", "multi-coil"])
def test_data_consistency_is_the_dense_solve(x64, rng, coils):
    op = _operator(coils, jnp.complex128)
    model = _model(op, rng, dtype=jnp.float64, cg_iters=40)
    z, y = _complex(rng, op.in_shape, np.complex128), _complex(rng, op.out_shape, np.complex128)
    lam = 0.07
    M = _dense(op)
    expected = np.linalg.solve(M.conj().T @ M + lam * np.eye(N * N), M.conj().T @ y.ravel() + lam * z.ravel())
    implicit = MoDL(op, diff="implicit", cg_iters=40, depth=2, width=2, dtype=jnp.float64, key=jax.random.PRNGKey(0))
    for m in (model, implicit):
        out = m.data_consistency(jnp.asarray(z), jnp.asarray(y), lam=lam)
        assert out.dtype == jnp.complex128
        np.testing.assert_allclose(np.asarray(out).ravel(), expected, rtol=1e-9, atol=1e-9)


def test_single_coil_cg_is_exact_in_two_iterations(rng):
    # A^H A + lam I has two eigenvalues (lam, 1 + lam) for a 0/1 mask: CG ends after 2 steps
    op = _operator(None)
    model = _model(op, rng, cg_iters=2)
    z, y = _complex(rng, op.in_shape), _complex(rng, op.out_shape)
    M = _dense(op)
    lam = float(model.lam)
    expected = np.linalg.solve(M.conj().T @ M + lam * np.eye(N * N), M.conj().T @ y.ravel() + lam * z.ravel())
    np.testing.assert_allclose(np.asarray(model.data_consistency(z, y)).ravel(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("coils", [None, 3], ids=["single-coil", "multi-coil"])
def test_network_matches_a_dense_numpy_reference(x64, rng, coils):
    op = _operator(coils, jnp.complex128)
    model = _model(op, rng, dtype=jnp.float64, iterations=3, cg_iters=40, lam=0.5)  # CG converged
    y = _complex(rng, op.out_shape, np.complex128)
    M = _dense(op)
    lam = float(model.lam)
    H = M.conj().T @ M + lam * np.eye(N * N)
    aty = M.conj().T @ y.ravel()
    x = aty
    for _ in range(3):  # x <- H^-1 (A^H y + lam D(x)), D the network's CNN on (Re, Im)
        z = np.asarray(model.denoiser(jnp.asarray(np.stack([x.real, x.imag]).reshape(2, N, N))))
        x = np.linalg.solve(H, aty + lam * (z[0] + 1j * z[1]).ravel())
    out = model(jnp.asarray(y))
    assert out.shape == (N, N) and out.dtype == jnp.complex128
    np.testing.assert_allclose(np.asarray(out).ravel(), x, rtol=1e-8, atol=1e-9)


def test_complex_stays_complex_and_precision_follows_the_data(x64, rng):
    op = _operator(2, jnp.complex64)
    model = _model(op, rng)  # float32 parameters
    y64 = _complex(rng, op.out_shape, np.complex64)
    assert model(y64).dtype == jnp.complex64  # single precision under x64
    assert model(y64.astype(np.complex128)).dtype == jnp.complex128
    assert model(y64.real).dtype == jnp.complex64  # real data are complex-compatible
    assert model.channels == 2 and model.denoiser.channels == 2


def test_real_operator_gives_one_channel_and_a_real_image(rng):
    op = ij.operators.Mask(rng.random((N, N)) > 0.4)
    model = _model(op, rng)
    assert model.channels == 1
    out = model(jnp.asarray(rng.standard_normal((N, N)), jnp.float32))
    assert out.dtype == jnp.float32 and out.shape == (N, N)


# ---- derivatives --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "coils,diff",
    [
        (None, "unroll"),
        pytest.param(3, "unroll", marks=pytest.mark.slow),  # each mode and operator kind runs by default
        pytest.param(None, "implicit", marks=pytest.mark.slow),
        (3, "implicit"),
    ],
)
def test_gradient_matches_central_differences(x64, rng, coils, diff):
    op = _operator(coils, jnp.complex128)
    # implicit derivatives are exact once CG has converged (8x8: at most 64 steps, far fewer here)
    model = _model(op, rng, dtype=jnp.float64, cg_iters=8 if diff == "unroll" else 40, diff=diff, lam=0.5)
    x_true = jnp.asarray(_complex(rng, op.in_shape, np.complex128))
    y = op(x_true) + 0.1 * jnp.asarray(_complex(rng, op.out_shape, np.complex128))

    def loss(params):
        log_lam, w = params
        m = eqx.tree_at(lambda m: (m.log_lam, m.denoiser.weights[1]), model, (log_lam, w))
        return jnp.sum(jnp.abs(m(y) - x_true) ** 2)

    params = (model.log_lam, model.denoiser.weights[1])
    g_lam, g_w = jax.jit(jax.grad(loss))(params)
    f = jax.jit(loss)
    eps = 1e-6
    fd_lam = (f((params[0] + eps, params[1])) - f((params[0] - eps, params[1]))) / (2 * eps)
    idx = (1, 2, 0, 1)
    e = jnp.zeros_like(params[1]).at[idx].set(eps)
    fd_w = (f((params[0], params[1] + e)) - f((params[0], params[1] - e))) / (2 * eps)
    if coils is not None:  # the coil maps are data: zero gradient
        g_op = jax.jit(jax.grad(lambda s: jnp.sum(jnp.abs(eqx.tree_at(lambda m: m.op.sensitivities, model, s)(y)))))(
            model.op.sensitivities)
        assert float(jnp.max(jnp.abs(g_op))) == 0.0
    np.testing.assert_allclose(g_lam, fd_lam, rtol=1e-6)
    np.testing.assert_allclose(g_w[idx], fd_w, rtol=1e-6)
    assert abs(float(g_lam)) > 1e-6 and abs(float(g_w[idx])) > 1e-8


def test_float32_gradient_is_finite_after_cg_converged_and_skips_the_operator(rng):
    # single coil: CG is exact after 2 of the 10 steps; backpropagating through the rest must
    # stay finite (the library's cg_fixed gave NaN here); the mask is data: zero gradient
    op = ij.operators.CartesianMRI(variable_density_mask(16, 4, key=jax.random.PRNGKey(0)))
    model = MoDL(op, iterations=3, cg_iters=10, depth=3, width=4, key=jax.random.PRNGKey(1))
    x = jnp.asarray(_complex(rng, (16, 16)))
    y = op(x)
    grads = eqx.filter_jit(eqx.filter_grad(lambda m: jnp.mean(jnp.abs(m(y) - x) ** 2)))(model)
    leaves = jax.tree.leaves(eqx.filter(grads, eqx.is_inexact_array))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert float(jnp.max(jnp.abs(grads.op.mask))) == 0.0
    assert float(jnp.max(jnp.abs(grads.denoiser.weights[0]))) > 0 and float(grads.log_lam) != 0


# ---- transforms ---------------------------------------------------------------------------------
def test_jit_and_vmap_agree_with_per_item_calls(rng):
    op = _operator(2)
    model = _model(op, rng, cg_iters=3)
    ys = jnp.asarray(_complex(rng, (3,) + op.out_shape))
    batched = jax.jit(jax.vmap(model))(ys)
    one = [model(y) for y in ys]
    atol = 1e-5 * float(jnp.max(jnp.abs(batched)))  # float32 rounding differs between the programs
    np.testing.assert_allclose(batched, np.stack(one), rtol=1e-5, atol=atol)
    # another operator per item: vmap over a batched pytree of masks
    masks = jax.vmap(lambda k: variable_density_mask(N, 2, key=k, center_fraction=0.25))(
        jax.random.split(jax.random.PRNGKey(7), 3)
    )

    def per_mask(y, m):
        return model(y, eqx.tree_at(lambda o: o.mask, op, m))

    out = eqx.filter_jit(jax.vmap(per_mask))(ys, masks)
    for i in range(3):
        np.testing.assert_allclose(out[i], per_mask(ys[i], masks[i]), rtol=1e-5, atol=atol)
    # in_axes=(0, None) with an explicit operator
    np.testing.assert_allclose(eqx.filter_vmap(model, in_axes=(0, None))(ys, op), batched, rtol=1e-5, atol=atol)


def test_iterations_override_matches_a_model_built_with_that_count(rng):
    op = _operator(None)
    model = _model(op, rng, iterations=3)
    other = eqx.tree_at(lambda m: m.denoiser, _model(op, rng, iterations=1), model.denoiser)
    y = jnp.asarray(_complex(rng, op.out_shape))
    np.testing.assert_allclose(model(y, iterations=1), other(y), rtol=1e-6, atol=1e-7)


# ---- errors -------------------------------------------------------------------------------------
def test_bad_construction_raises_naming_the_argument(rng):
    op = _operator(None)
    key = jax.random.PRNGKey(0)
    for kw, match in [
        ({"iterations": 0}, "`iterations` must be an int >= 1"),
        ({"iterations": 2.5}, "`iterations`"),
        ({"cg_iters": 0}, "`cg_iters`"),
        ({"width": 0}, "`width` must be an int >= 1"),
        ({"depth": 1}, "`depth` must be an int >= 2"),
        ({"lam": 0.0}, "`lam` must be a finite float > 0"),
        ({"lam": float("nan")}, "`lam`"),
        ({"diff": "adjoint"}, "`diff` must be one of"),
        ({"denoiser": DnCNN(1, 2, 4, key=key)}, "2 channel"),
    ]:
        with pytest.raises(ValueError, match=match):
            MoDL(op, key=key, **kw)
    with pytest.raises(ValueError, match="`key`"):
        MoDL(op)
    with pytest.raises(TypeError, match="`op` must be an invjax LinearOperator"):
        MoDL(np.eye(4), key=key)
    with pytest.raises(ValueError, match="`op` must map 2-D images"):
        MoDL(ij.operators.Mask(np.ones(5)), key=key)


def test_bad_call_raises_naming_the_argument(rng):
    op = _operator(3)
    model = _model(op, rng)
    with pytest.raises(ValueError, match=r"`y` must have shape \(3, 8, 8\) \(op.out_shape\), got \(8, 8\)"):
        model(jnp.zeros((N, N), jnp.complex64))
    with pytest.raises(ValueError, match="batch with jax.vmap"):
        model(jnp.zeros((2, 3, N, N), jnp.complex64))
    with pytest.raises(TypeError, match="`y` must be numeric"):
        model(jnp.zeros(op.out_shape, bool))
    with pytest.raises(ValueError, match="`op` must act on images of the network's shape"):
        model(jnp.zeros((N, N), jnp.complex64), ij.operators.CartesianMRI(np.ones((N, N + 2))))
    with pytest.raises(ValueError, match="`iterations`"):
        model(jnp.zeros(op.out_shape, jnp.complex64), iterations=0)
    real = _model(ij.operators.Mask(np.ones((N, N))), rng)
    with pytest.raises(TypeError, match="`y` must be real"):
        real(jnp.zeros((N, N), jnp.complex64))


# ---- data: coil maps, masks, brain slices ------------------------------------------------------
@pytest.mark.parametrize("key", [None, jax.random.PRNGKey(4)], ids=["fixed", "random"])
def test_coil_maps_are_normalised_and_smooth(key):
    n, coils = 64, 8
    S = np.asarray(coil_sensitivities(n, coils, key=key))
    assert S.shape == (coils, n, n) and S.dtype == np.complex64
    np.testing.assert_allclose(np.sum(np.abs(S) ** 2, axis=0), 1.0, atol=1e-5)
    # smooth: first differences O(1/n), second differences O(1/n^2) (measured ~5/n and ~37/n^2
    # at n = 32..128: samples of a fixed smooth function; a rough map would have O(1) ones)
    d1 = max(np.abs(np.diff(S, axis=1)).max(), np.abs(np.diff(S, axis=2)).max())
    d2 = max(np.abs(np.diff(S, 2, axis=1)).max(), np.abs(np.diff(S, 2, axis=2)).max())
    assert d1 < 8.0 / n and d2 < 60.0 / n**2
    # distinct coils (not all the same map) and a non-trivial phase
    assert np.abs(np.abs(S[0]) - np.abs(S[coils // 2])).max() > 0.3
    assert np.ptp(np.angle(S[0])) > 1.0
    if key is not None:
        np.testing.assert_array_equal(S, np.asarray(coil_sensitivities(n, coils, key=key)))
    with pytest.raises(ValueError, match="`coils`"):
        coil_sensitivities(n, 0)


@pytest.mark.parametrize("n,acc", [(64, 4), (48, 4), (33, 3)])
def test_mask_has_the_acceleration_and_a_full_centre(n, acc):
    key = jax.random.PRNGKey(n)
    m = np.asarray(variable_density_mask(n, acc, key=key, center_fraction=0.08, centered=True))
    lines = round(n / acc)
    assert m.shape == (n, n) and set(np.unique(m)) <= {0.0, 1.0}
    assert np.all(m == m[:1])  # whole phase-encode lines (columns)
    assert m[0].sum() == lines
    centre = max(1, round(0.08 * n))
    k = np.abs(np.arange(n) - n // 2)
    assert np.all(m[0][np.argsort(k, kind="stable")[:centre]] == 1)
    # the default convention (DC at index 0) is the same mask shifted
    plain = np.asarray(variable_density_mask(n, acc, key=key, center_fraction=0.08))
    np.testing.assert_array_equal(plain, np.fft.ifftshift(m))
    assert plain[0, 0] == 1
    np.testing.assert_array_equal(plain, np.asarray(variable_density_mask(n, acc, key=key, center_fraction=0.08)))
    assert not np.array_equal(plain, np.asarray(variable_density_mask(n, acc, key=jax.random.PRNGKey(99))))


def test_mask_density_decreases_away_from_the_centre():
    keys = jax.random.split(jax.random.PRNGKey(0), 200)
    masks = np.asarray(jax.vmap(lambda k: variable_density_mask(64, 4, key=k, centered=True))(keys))[:, 0]
    freq = masks.mean(axis=0)
    k = np.abs(np.arange(64) - 32)
    assert freq[(k > 5) & (k < 12)].mean() > 2 * freq[k > 24].mean() > 0


def test_mask_errors():
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="`acceleration`"):
        variable_density_mask(64, 1, key=key)
    with pytest.raises(ValueError, match="`center_fraction`"):
        variable_density_mask(64, 8, key=key, center_fraction=0.2)
    with pytest.raises(ValueError, match="`key`"):
        variable_density_mask(64, 4, key=None)


def test_brain_slices_splits_are_disjoint_separated_and_deterministic():
    pytest.importorskip("nilearn")
    pytest.importorskip("nibabel")
    parts = {s: brain_slices(32, s, with_index=True) for s in ("train", "validation", "test")}
    for images, index in parts.values():
        assert images.shape == (len(index), 32, 32) and images.dtype == jnp.float32
        assert float(images.min()) >= 0 and np.allclose(np.asarray(images).max(axis=(1, 2)), 1.0)
    idx = {s: set(v[1].tolist()) for s, v in parts.items()}
    assert not (idx["train"] & idx["validation"]) and not (idx["train"] & idx["test"])
    assert not (idx["validation"] & idx["test"])
    train = np.array(sorted(idx["train"]))
    for held in ("validation", "test"):
        dist = np.abs(train[:, None] - np.array(sorted(idx[held]))[None]).min()
        assert dist > 5  # the default gap of 5 slices (mm)
    assert len(idx["train"]) > 2 * len(idx["test"]) > 0
    again, index = brain_slices(32, "test", with_index=True)
    np.testing.assert_array_equal(index, parts["test"][1])
    np.testing.assert_array_equal(np.asarray(again), np.asarray(parts["test"][0]))
    with pytest.raises(ValueError, match="`split`"):
        brain_slices(32, "val")


def test_brain_slices_without_nilearn_says_what_to_install(monkeypatch):
    from invjax.learned.training import mri_data

    mri_data._volume.cache_clear()
    monkeypatch.setitem(sys.modules, "nilearn", None)
    try:
        with pytest.raises(ImportError, match=r'pip install "invjax\[train\]"'):
            brain_slices(32, "test")
    finally:
        mri_data._volume.cache_clear()
