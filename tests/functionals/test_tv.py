"""Total variation: values against numpy, composite structure, prox against scikit-image and
cvxpy, convergence certificate, differentiation modes, batching."""

import cvxpy as cp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
from skimage.restoration import denoise_tv_chambolle

import invjax.functionals as F
from invjax.operators import FiniteDifference
from tests.conftest import x64_enabled


def _np_gradient(x, boundary, axes=None):
    axes = range(x.ndim) if axes is None else axes
    out = []
    for a in axes:
        if boundary == "periodic":
            out.append(np.roll(x, -1, axis=a) - x)
        else:
            d = np.diff(x, axis=a)
            pad = [(0, 0)] * x.ndim
            pad[a] = (0, 1)
            out.append(np.pad(d, pad))
    return np.stack(out)


def _np_tv(x, isotropic, boundary, axes=None):
    g = np.abs(_np_gradient(x, boundary, axes))
    return np.sqrt((g**2).sum(0)).sum() if isotropic else g.sum()


def _image(n=32, sigma=0.1, seed=0):
    rng = np.random.default_rng(seed)
    img = skimage.data.camera()[100 : 100 + 2 * n : 2, 200 : 200 + 2 * n : 2] / 255.0
    return img + sigma * rng.standard_normal(img.shape)


@pytest.mark.parametrize("shape", [(7,), (6, 5), (4, 3, 5)])
def test_value_matches_numpy(shape, rng, x64):
    x = rng.standard_normal(shape)
    z = x + 1j * rng.standard_normal(shape)
    for isotropic in (True, False):
        for boundary in ("neumann", "periodic"):
            tv = F.TV(isotropic=isotropic, boundary=boundary)
            real, cplx = jax.jit(lambda x, z: (tv(x), tv(z)))(x, z)
            assert float(real) == pytest.approx(_np_tv(x, isotropic, boundary), rel=1e-12)
            assert float(cplx) == pytest.approx(_np_tv(z, isotropic, boundary), rel=1e-12)


def test_axes_and_composite_structure(rng):
    x = jnp.asarray(rng.standard_normal((3, 6, 5)), jnp.float32)
    tv = F.TV(axes=(1, 2))
    per_channel = sum(_np_tv(np.asarray(c), True, "neumann") for c in x)
    assert float(tv(x)) == pytest.approx(per_channel, rel=1e-5)
    D, g = tv.composite(x.shape)
    assert isinstance(D, FiniteDifference) and D.boundary == "neumann" and D.axes == (1, 2)
    assert D.out_shape == (2, 3, 6, 5)
    assert isinstance(g, F.L21) and g.axis == 0
    assert isinstance(F.TV(isotropic=False).inner, F.L1)
    assert float(g(D(x))) == pytest.approx(float(tv(x)), rel=1e-6)
    assert isinstance(tv.operator(x.shape), FiniteDifference)
    # scaling carries over to the inner functional
    D2, g2 = (0.25 * tv).composite(x.shape)
    assert D2 == D and isinstance(g2, F.Scaled)
    assert float(g2(D2(x))) == pytest.approx(0.25 * float(tv(x)), rel=1e-6)
    # the non-composite default
    I, h = F.L1().composite((4,))
    assert isinstance(h, F.L1) and I.in_shape == (4,)


@pytest.mark.parametrize("lam", [0.05, 0.2])
def test_prox_objective_vs_skimage(lam, x64):
    """scikit-image's weight is our step; compare the objective of both under our TV."""
    v = _image(48)
    tv = F.TV()

    def objective(x):
        return 0.5 * np.sum((np.asarray(x) - v) ** 2) + lam * float(tv(x))

    sk = denoise_tv_chambolle(v, weight=lam, eps=1e-7, max_num_iter=3000)
    tight = F.TV(tol=1e-7, max_iters=5000).prox(v, lam)
    assert objective(tight) <= objective(sk) + 1e-9 * objective(sk)
    # default settings against scikit-image's defaults
    sk_default = denoise_tv_chambolle(v, weight=lam)
    assert objective(tv.prox(v, lam)) <= objective(sk_default) + 1e-9 * objective(sk)


def _cvx_tv_prox(v, lam, isotropic):
    X = cp.Variable(v.shape)
    dx = cp.vstack([X[1:, :] - X[:-1, :], np.zeros((1, v.shape[1]))])
    dy = cp.hstack([X[:, 1:] - X[:, :-1], np.zeros((v.shape[0], 1))])
    if isotropic:
        reg = cp.sum(cp.norm(cp.vstack([cp.vec(dx, order="C"), cp.vec(dy, order="C")]), 2, axis=0))
    else:
        reg = cp.sum(cp.abs(dx)) + cp.sum(cp.abs(dy))
    prob = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(X - v) + lam * reg))
    prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    assert prob.status == cp.OPTIMAL
    return X.value


@pytest.mark.parametrize("isotropic", [True, False])
def test_prox_vs_cvxpy_and_certificate(isotropic, x64):
    v = _image(10, sigma=0.2)
    lam = 0.15
    ref = _cvx_tv_prox(v, lam, isotropic)
    res = F.TV(isotropic=isotropic, tol=1e-6).solve_prox(v, lam)
    err = np.linalg.norm(np.asarray(res.x) - ref)
    assert err <= 1e-4 * np.linalg.norm(ref)
    # the duality gap certifies the distance to the solution
    assert float(res.gap) >= 0 and err <= np.sqrt(2 * float(res.gap)) + 1e-7
    # the dual is feasible and reproduces x
    D = F.TV().operator(v.shape)
    np.testing.assert_allclose(res.x, v - D.T(res.dual), atol=1e-12)
    mag = np.linalg.norm(res.dual, axis=0) if isotropic else np.abs(res.dual)
    assert mag.max() <= lam * (1 + 1e-12)


def test_default_tolerance_accuracy_float32():
    v = _image(32)
    with x64_enabled():
        ref = np.asarray(F.TV(tol=1e-9, max_iters=20000).prox(jnp.asarray(v, jnp.float64), 0.1))
    res = F.TV().solve_prox(jnp.asarray(v, jnp.float32), 0.1)
    assert res.x.dtype == jnp.float32
    assert 0 < int(res.iterations) < 1000
    assert np.linalg.norm(np.asarray(res.x) - ref) <= 5 * F.TV().tol * np.linalg.norm(v)


def test_prox_special_cases(x64):
    v = jnp.asarray(_image(12))
    tv = F.TV(tol=1e-8, max_iters=20000)
    np.testing.assert_allclose(tv.prox(v, 0.0), v, atol=1e-15)  # zero step
    const = jnp.full(v.shape, 0.3)
    np.testing.assert_allclose(tv.prox(const, 1.0), const, atol=1e-15)  # TV(const) = 0
    np.testing.assert_allclose(tv.prox(jnp.zeros(v.shape), 1.0), 0.0)
    # a huge step flattens the image to its mean (Neumann: the mean is preserved)
    flat = tv.prox(v, 1e3)
    np.testing.assert_allclose(flat, jnp.full(v.shape, v.mean()), atol=1e-5)


def test_warm_start(x64):
    v = jnp.asarray(_image(16))
    tv = F.TV(tol=1e-6)
    first = tv.solve_prox(v, 0.1)
    again = tv.solve_prox(v, 0.1, dual=first.dual)
    assert int(again.iterations) <= 10
    np.testing.assert_allclose(again.x, first.x, atol=1e-5)
    with pytest.raises(ValueError, match="`dual` must have shape"):
        tv.solve_prox(v, 0.1, dual=jnp.zeros((2, 3, 3)))


def test_vmap_batch_with_different_steps():
    vs = jnp.stack([jnp.asarray(_image(16, seed=s), jnp.float32) for s in range(3)])
    steps = jnp.asarray([0.02, 0.1, 0.3], jnp.float32)
    tv = F.TV()
    batched = jax.jit(jax.vmap(tv.prox))(vs, steps)
    for i in range(3):
        np.testing.assert_allclose(batched[i], tv.prox(vs[i], steps[i]), atol=2e-5)


def test_differentiation_modes(x64):
    v = jnp.asarray(_image(8))
    d = jnp.asarray(np.random.default_rng(1).standard_normal(v.shape))
    c = jnp.asarray(np.random.default_rng(2).standard_normal(v.shape))
    # while_loop mode: reverse mode is refused by JAX (forward mode is checked below)
    with pytest.raises(ValueError, match="Reverse-mode differentiation does not work"):
        jax.eval_shape(jax.grad(lambda v: jnp.sum(F.TV().prox(v, 0.1))), v)  # trace only
    # unroll mode runs the same iterations as a scan (freezing once converged): same output, and
    # its reverse-mode derivative is the transpose of the while loop's forward-mode derivative
    same_loop = F.TV(tol=1e-4, max_iters=300)
    unrolled = F.TV(tol=1e-4, max_iters=300, unroll=True)

    @jax.jit
    def forward_backward(v, c):
        x, vjp = jax.vjp(lambda v: unrolled.prox(v, 0.1), v)
        return x, vjp(c)[0]

    x_unroll, vjp_c = forward_backward(v, c)
    x_while, jvp_while = jax.jvp(lambda v: same_loop.prox(v, 0.1), (v,), (d,))
    assert int(same_loop.solve_prox(v, 0.1).iterations) < 300  # so the scan must have frozen
    np.testing.assert_allclose(x_unroll, x_while, atol=1e-12)
    assert float(jnp.sum(vjp_c * d)) == pytest.approx(float(jnp.sum(c * jvp_while)), rel=1e-8)
