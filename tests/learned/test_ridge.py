"""ConvexRidge (CRR-NN / WCRR-NN) against independent oracles: numpy convolutions, dense
matrices and their eigenvalues, central differences, scipy minimisers, the invjax solvers."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.integrate
import scipy.optimize
import scipy.signal

import invjax as ij
from invjax.learned.priors.ridge import ConvexRidge
from invjax.learned.priors.spline import LinearSpline
from tests.conftest import x64_enabled

SMALL = dict(channels=(1, 3, 6), kernel_size=3, knots=11)  # composed filters 5 x 5
# Few distinct (architecture, shape, dtype) combinations: each costs a compilation.
N = 8


def _x64_off():
    return x64_enabled(False)


@functools.lru_cache(maxsize=None)
def _model(weakly_convex=False, seed=0, f64=False):
    """A small model with random filters and random slopes (some raw slopes outside the bounds,
    so that the clipping is active). ``f64`` models must be used under the ``x64`` fixture."""
    with _x64_off():  # one compiled initialisation, whatever the test's mode
        m = ConvexRidge(key=jax.random.key(seed), weakly_convex=weakly_convex, strength=1.7, scale=2.3, **SMALL)
        lo = -1.0 if weakly_convex else 0.0
        rng = np.random.default_rng(seed + 100)
        raw = rng.uniform(lo - 0.3, 1.3, m.spline.raw_slopes.shape).astype(np.float32)
        m = eqx.tree_at(lambda t: t.spline.raw_slopes, m, jnp.asarray(raw))
    if f64:
        m = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), m)
    return m


def _image(seed, shape=(N, N), scale=0.3, dtype=np.float32):
    """Random images whose filter responses spread over the whole knot range and beyond."""
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(dtype)


# ---- the multi-convolution -------------------------------------------------------------------------
def _np_conv(m, x):
    """Layer by layer circular cross-correlation in numpy (independent of the composed filters)."""
    kernels = [np.asarray(k, np.float64) for k in m.kernels]
    kernels[0] = kernels[0] - kernels[0].mean(axis=(2, 3), keepdims=True)
    z = np.asarray(x, np.float64)[None]
    for h in kernels:
        p = h.shape[-1] // 2
        out = np.zeros((h.shape[0],) + z.shape[1:])
        for a in range(h.shape[2]):
            for b in range(h.shape[3]):
                shifted = np.roll(z, (-(a - p), -(b - p)), axis=(1, 2))
                out += np.einsum("oi,ihw->ohw", h[:, :, a, b], shifted)
        z = out
    return z


def test_conv_matches_layerwise_numpy_and_adjoint_dot_test(x64):
    m = _model(f64=True)
    for shape in ((N, N), (3, 4)):  # (3, 4): smaller than the 5 x 5 composed filters (aliasing)
        rng = np.random.default_rng(sum(shape))
        for _ in range(3):
            x = rng.standard_normal(shape)
            z = rng.standard_normal((6,) + shape)
            wx = np.asarray(m.conv(x))
            np.testing.assert_allclose(wx, _np_conv(m, x), rtol=1e-12, atol=1e-12)
            lhs, rhs = np.vdot(wx, z), np.vdot(x, np.asarray(m.conv_adjoint(z)))
            assert abs(lhs - rhs) <= 1e-12 * np.linalg.norm(wx) * np.linalg.norm(z)


@pytest.mark.slow
def test_three_layers_compose_by_full_convolution():
    m = ConvexRidge(key=jax.random.key(1), channels=(1, 2, 3, 4), kernel_size=3)
    h = [np.asarray(k, np.float64) for k in m.kernels]
    g = h[0][:, 0] - h[0][:, 0].mean(axis=(1, 2), keepdims=True)
    for layer in h[1:]:
        c_out, c_in = layer.shape[:2]
        g = np.stack([sum(scipy.signal.convolve2d(g[i], layer[o, i]) for i in range(c_in)) for o in range(c_out)])
    assert m.filter_size == 7 and g.shape == (4, 7, 7)
    np.testing.assert_allclose(m.impulse_responses(), g, rtol=1e-5, atol=1e-6 * np.abs(g).max())
    np.testing.assert_allclose(g.sum(axis=(1, 2)), 0, atol=1e-6)


def test_operator_norm_exact_on_grid_and_shape_free_bounds(x64):
    m = _model(f64=True)
    for shape in [(N, N), (4, 6)]:  # (4, 6): smaller than the filters
        basis = np.eye(shape[0] * shape[1]).reshape((-1,) + shape)
        dense = np.stack([_np_conv(m, e).ravel() for e in basis], axis=1)
        exact = np.linalg.norm(dense, 2)
        np.testing.assert_allclose(float(m.operator_norm(shape)), exact, rtol=1e-10)
        assert float(m.operator_norm()) >= exact
        if shape == (N, N):
            # grad R(x) = (lambda / mu) W^T sigma(mu W x) with the dense W and the numpy spline
            lam, mu = float(m.strength), float(m.scale)
            x = _image(3, dtype=np.float64)
            z = (dense @ x.ravel()).reshape(m.channels[-1], -1)
            want = lam / mu * dense.T @ _np_sigma(m.spline, mu * z).ravel()
            np.testing.assert_allclose(np.asarray(m.grad(x)).ravel(), want, rtol=1e-9, atol=1e-12)
    # with psi_i = t^2 / 2, R(x) = lambda ||W x||^2 / 2 whatever mu, and the shape-free Lipschitz
    # bound is lambda ||W||^2 for every image size...
    quad = eqx.tree_at(lambda t: t.spline.raw_slopes, m, jnp.ones_like(m.spline.raw_slopes))
    x = _image(4, dtype=np.float64)
    lam = float(m.strength)
    np.testing.assert_allclose(float(quad(x)), lam * np.sum(_np_conv(m, x) ** 2) / 2, rtol=1e-10)
    big = lam * float(quad.operator_norm((256, 256))) ** 2
    assert big <= float(quad.lipschitz) and lam * float(m.operator_norm((N, N))) ** 2 <= float(quad.lipschitz)
    # ...and within the Bernstein factor (2 %) of the supremum, which the 256² grid samples to 0.5 %
    assert float(quad.lipschitz) <= 1.03 * big
    assert float(quad.weak_convexity) == 0.0


# ---- the spline -------------------------------------------------------------------------------------
def _np_sigma(sp, t):
    """Independent linear spline: knot values by the recursion of the parametrisation (held at
    zero instead of changing sign), np.interp, end slopes raised to 0 outside the grid."""
    knots = np.asarray(sp.grid(jnp.float64))
    m, d, h = len(knots), knots[1] - knots[0], (len(knots) - 1) // 2
    s = np.clip(np.asarray(sp.raw_slopes, np.float64), sp.lower, sp.upper)
    out = []
    for sc, tc in zip(s, t):
        vals = np.zeros(m)
        for j in range(h, m - 1):
            vals[j + 1] = max(0.0, vals[j] + d * sc[j])
        for j in range(h, 0, -1):
            vals[j - 1] = min(0.0, vals[j] - d * sc[j - 1])
        left, right = max((vals[1] - vals[0]) / d, 0.0), max((vals[-1] - vals[-2]) / d, 0.0)
        y = np.interp(tc, knots, vals)
        y = np.where(tc < knots[0], vals[0] + left * (tc - knots[0]), y)
        y = np.where(tc > knots[-1], vals[-1] + right * (tc - knots[-1]), y)
        out.append(y)
    return np.array(out)


@pytest.mark.parametrize("lower, knots", [(0.0, 11), (-1.0, 7)])
def test_spline_against_numpy_and_its_integral(lower, knots, x64):
    sp = LinearSpline(3, knots=knots, spline_range=0.5, lower=lower)
    raw = np.random.default_rng(knots).uniform(-2.0, 2.0, (3, knots - 1))
    sp = eqx.tree_at(lambda s: s.raw_slopes, sp, jnp.asarray(raw))
    t = np.tile(np.linspace(-1.2, 1.2, 241), (3, 1))
    sigma = np.asarray(sp(t))
    np.testing.assert_allclose(sigma, _np_sigma(sp, t), atol=1e-13)
    assert np.all(np.diff(sigma, axis=1) >= lower * np.diff(t, axis=1) - 1e-13)
    assert np.all(sigma * t >= 0)  # psi non-decreasing in |t|
    if lower < 0:
        assert np.any(np.diff(sigma, axis=1) < 0)  # the test reaches negative slopes
    # psi(t) = int_0^t sigma: the trapezoidal rule on a grid through every knot is exact for the
    # independent piecewise-linear spline
    tq = np.array([-1.1, -0.37, 0.0, 0.22, 0.5, 0.93])
    psi = np.asarray(sp.potential(np.tile(tq, (3, 1))))
    knots_np = np.asarray(sp.grid(jnp.float64))
    for k, b in enumerate(tq):
        u = np.union1d(np.linspace(0.0, b, 7), knots_np[knots_np * (knots_np - b) < 0])
        # u ascends: the integral from 0 to b < 0 is minus the one over [b, 0]
        ref = np.sign(b) * scipy.integrate.trapezoid(_np_sigma(sp, np.tile(u, (3, 1))), u, axis=1)
        np.testing.assert_allclose(psi[:, k], ref, atol=1e-12)


@pytest.mark.parametrize("weakly_convex", [False, True])
def test_convexity_constraint_survives_random_perturbation(weakly_convex, x64):
    """Any parameter update keeps sigma_i' in [0, 1] (CRR) or [-1, 1] (WCRR): psi_i convex
    (1-weakly convex) with psi_i'' <= 1, psi_i >= psi_i(0) = 0 non-decreasing in |t|, and the
    filters zero-mean."""
    m = _model(weakly_convex, f64=True)
    leaves, tree = jax.tree_util.tree_flatten(m)
    rng = np.random.default_rng(7)
    m = jax.tree_util.tree_unflatten(tree, [a + 5.0 * rng.standard_normal(a.shape) for a in leaves])
    t = np.linspace(-0.3, 0.3, 2001)
    tt = np.tile(t, (6, 1))
    quotient = np.diff(np.asarray(m.spline(tt)), axis=1) / np.diff(t)
    lo = -1.0 if weakly_convex else 0.0
    assert quotient.min() >= lo - 1e-9 and quotient.max() <= 1 + 1e-9
    # psi - lo t^2 / 2 is convex: midpoint inequality; psi >= psi(0) = 0, non-decreasing in |t|
    psi = np.asarray(m.spline.potential(tt))
    shifted = psi - lo * t**2 / 2
    assert np.all(shifted[:, 1:-1] <= (shifted[:, :-2] + shifted[:, 2:]) / 2 + 1e-12)
    assert psi.min() >= -1e-15 and np.all(np.diff(psi[:, t >= 0], axis=1) >= -1e-15)
    assert np.all(np.diff(psi[:, t <= 0], axis=1) <= 1e-15)
    assert (float(m.weak_convexity) > 0) == weakly_convex
    np.testing.assert_allclose(m.conv(np.ones((N, N))), 0, atol=1e-12 * float(m.operator_norm()))
    # projection leaves the function unchanged and the raw slopes in range
    p = m.project()
    raw = np.asarray(p.spline.raw_slopes)
    assert raw.min() >= lo and raw.max() <= 1
    x = _image(0, dtype=np.float64)
    np.testing.assert_allclose(p(x), m(x), rtol=1e-12)


# ---- value, gradient, Lipschitz constant ----------------------------------------------------------
@pytest.mark.parametrize("weakly_convex", [False, True])
def test_grad_and_hessian_bounds(weakly_convex, x64):
    """grad R against central differences of R; every Hessian eigenvalue (dense, at random
    points) in [-rho, L]; difference quotients of grad R at most L."""
    m = _model(weakly_convex, seed=4, f64=True)
    x = _image(1, dtype=np.float64)
    g = np.asarray(m.grad(x))
    if not weakly_convex:
        np.testing.assert_allclose(g, jax.grad(m)(x), rtol=1e-12, atol=1e-14)
    rng = np.random.default_rng(11)
    for _ in range(3):
        d = rng.standard_normal(x.shape)
        h = 1e-6
        fd = (float(m(x + h * d)) - float(m(x - h * d))) / (2 * h)
        np.testing.assert_allclose(fd, np.vdot(g, d), rtol=1e-6)
    lip, rho = float(m.lipschitz), float(m.weak_convexity)
    basis = jnp.eye(N * N, dtype=jnp.float64).reshape(-1, N, N)
    hessian = jax.jit(jax.vmap(lambda e, y: jax.jvp(m.grad, (y,), (e,))[1], in_axes=(0, None)))
    for k in range(3):
        y = _image(20 + k, scale=0.1 * (k + 1), dtype=np.float64)
        H = np.asarray(hessian(basis, y)).reshape(N * N, N * N)
        np.testing.assert_allclose(H, H.T, atol=1e-12)
        eig = np.linalg.eigvalsh(H)
        assert eig.max() <= lip * (1 + 1e-12) and eig.min() >= -rho * (1 + 1e-12) - 1e-12
        assert np.abs(eig).max() >= 0.05 * lip  # not vacuous
        z = _image(40 + k, dtype=np.float64)
        assert np.linalg.norm(np.asarray(m.grad(y)) - np.asarray(m.grad(z))) <= lip * np.linalg.norm(y - z)


def test_parameter_gradient_matches_central_differences(x64):
    m = _model(f64=True)
    x = _image(2, dtype=np.float64)
    loss = eqx.filter_jit(lambda mm: mm(x) + jnp.sum(mm.grad(x) ** 2))
    grads = eqx.filter_grad(loss)(m)
    leaves, tree = jax.tree_util.tree_flatten(m)
    rng = np.random.default_rng(3)
    raw = np.asarray(m.spline.raw_slopes)
    # raw slopes: only those strictly inside the bounds move the function
    inside = (raw > 0.01) & (raw < 0.99)
    direction = [rng.standard_normal(a.shape) * (inside if a.shape == raw.shape else 1) for a in leaves]
    shift = lambda c: jax.tree_util.tree_unflatten(tree, [a + c * d for a, d in zip(leaves, direction)])  # noqa: E731
    h = 1e-6
    fd = (float(loss(shift(h))) - float(loss(shift(-h)))) / (2 * h)
    ad = sum(np.vdot(np.asarray(a), d) for a, d in zip(jax.tree_util.tree_leaves(grads), direction))
    np.testing.assert_allclose(fd, ad, rtol=1e-6)


# ---- the proximal map -------------------------------------------------------------------------------
@pytest.mark.parametrize("weakly_convex", [False, True])
def test_prox_optimality_and_scipy(weakly_convex, x64):
    m = _model(weakly_convex, seed=5, f64=True)
    v = _image(3, dtype=np.float64)
    step = 0.9 / float(m.weak_convexity) if weakly_convex else 3.0
    x = m.prox(v, step)
    assert x.dtype == jnp.float64
    residual = np.asarray(x) - v + step * np.asarray(m.grad(x))
    assert np.linalg.norm(residual) <= 1e-9 * np.linalg.norm(v)

    def obj(z):
        z = z.reshape(N, N)
        return step * float(m(z)) + 0.5 * np.sum((z - v) ** 2), (step * np.asarray(m.grad(z)) + z - v).ravel()

    options = dict(maxiter=5000, ftol=1e-15, gtol=1e-12)
    res = scipy.optimize.minimize(obj, np.zeros(N * N), jac=True, method="L-BFGS-B", options=options)
    np.testing.assert_allclose(np.asarray(x).ravel(), res.x, atol=1e-6 * np.abs(v).max())
    assert obj(np.asarray(x))[0] <= res.fun + 1e-12


def test_float32_end_to_end():
    """Single precision (the default): adjoint, zero mean, prox optimality, Scaled, denoise,
    the conjugate prox (PDHG), jit and vmap against eager calls."""
    m = _model(seed=6)
    x, z = _image(1), _image(2, (6, N, N), scale=1.0)
    wx = m.conv(x)
    assert wx.dtype == jnp.float32 and m(x).dtype == jnp.float32
    lhs, rhs = np.vdot(np.asarray(wx, np.float64), z), np.vdot(x, np.asarray(m.conv_adjoint(z), np.float64))
    assert abs(lhs - rhs) <= 1e-5 * np.linalg.norm(wx) * np.linalg.norm(z)
    # zero-mean filters: constants are in the kernel of W, R and grad R ignore them
    np.testing.assert_allclose(m.conv(np.full((N, N), 3.0, np.float32)), 0, atol=1e-5)
    np.testing.assert_allclose(m(x + 2.0), m(x), rtol=1e-5)
    np.testing.assert_allclose(np.sum(np.asarray(m.grad(x))), 0, atol=1e-5)
    v = _image(4)
    p = m.prox(v, 2.0)
    assert p.dtype == jnp.float32
    assert np.linalg.norm(np.asarray(p) - v + 2.0 * np.asarray(m.grad(p))) <= 1e-4 * np.linalg.norm(v)
    np.testing.assert_allclose((0.5 * m).prox(v, 4.0), p, atol=1e-6)  # Scaled folds the weight into the step
    # denoise(v, sigma) = prox at step sigma^2 (no calibration); sigma <= 1 on the [0, 1] scale
    np.testing.assert_allclose(m.denoise(v, 0.8), m.prox(v, 0.64), atol=1e-6)
    np.testing.assert_array_equal(m.prox(v, 0.0), v)
    np.testing.assert_allclose(m.prox_conj(v, 0.5), v - 0.5 * m.prox(v / 0.5, 2.0), atol=1e-6)
    # jit and vmap (over images and steps) against the eager calls
    xs = np.stack([_image(50 + k) for k in range(3)])
    steps = np.array([0.5, 1.0, 2.0], np.float32)

    @eqx.filter_jit
    def everything(mm, y, s):
        return mm(y), mm.grad(y), mm.prox(y, s)

    batched = jax.vmap(everything, in_axes=(None, 0, 0))(m, xs, steps)
    for k in range(3):
        eager = (m(xs[k]), m.grad(xs[k]), m.prox(xs[k], steps[k]))
        for a, b in zip(batched, eager):
            np.testing.assert_allclose(a[k], b, rtol=2e-5, atol=2e-6)


def test_weakly_convex_prox_step_check(x64):
    m = _model(True, seed=7, f64=True)
    v = _image(5, dtype=np.float64)
    rho = float(m.weak_convexity)
    with pytest.raises(ValueError, match=r"`step` must be < 1 / rho"):
        m.prox(v, 1.5 / rho)
    with pytest.raises(ValueError, match="step"):
        m.prox(v, -1.0)
    # traced steps are checked at run time
    prox = eqx.filter_jit(lambda mm, vv, s: mm.prox(vv, s))
    assert np.all(np.isfinite(prox(m, v, 0.5 / rho)))
    with pytest.raises(Exception, match="weakly convex prox is not defined"):
        jax.block_until_ready(prox(m, v, 1.5 / rho))


def test_prox_derivatives_match_central_differences(x64):
    """Implicit derivatives of the prox in v, the step and the parameters; a training step with
    them keeps the constraints."""
    m = _model(True, seed=8, f64=True)
    v = _image(6, dtype=np.float64)
    step = 0.5 / float(m.weak_convexity)
    rng = np.random.default_rng(9)
    w = rng.standard_normal(v.shape)

    def loss(mm, vv, s, xnp=jnp):
        x = xnp.asarray(mm.prox(vv, s))
        return xnp.vdot(w, x) + xnp.sum(x**3)

    g_model, g_v, g_s = eqx.filter_grad(lambda args: loss(*args))((m, v, jnp.asarray(step)))
    loss = functools.partial(loss, xnp=np)  # central differences in numpy
    h = 1e-6
    d = rng.standard_normal(v.shape)
    fd_v = (float(loss(m, v + h * d, step)) - float(loss(m, v - h * d, step))) / (2 * h)
    np.testing.assert_allclose(np.vdot(g_v, d), fd_v, rtol=1e-6)
    fd_s = (float(loss(m, v, step + h)) - float(loss(m, v, step - h))) / (2 * h)
    np.testing.assert_allclose(float(g_s), fd_s, rtol=1e-6)
    dk = rng.standard_normal(m.kernels[1].shape)
    shift = lambda c: eqx.tree_at(lambda t: t.kernels[1], m, m.kernels[1] + c * dk)  # noqa: E731
    fd_k = (float(loss(shift(h), v, step)) - float(loss(shift(-h), v, step))) / (2 * h)
    np.testing.assert_allclose(np.vdot(g_model.kernels[1], dk), fd_k, rtol=1e-6)
    for name in ("log_strength", "log_scale"):
        shift = lambda c: eqx.tree_at(lambda t: getattr(t, name), m, getattr(m, name) + c)  # noqa: E731
        fd = (float(loss(shift(h), v, step)) - float(loss(shift(-h), v, step))) / (2 * h)
        np.testing.assert_allclose(float(getattr(g_model, name)), fd, rtol=1e-6)
    # a (huge) optax step with these gradients leaves valid parameters: the constraints are
    # parametrisations
    opt = optax.sgd(1e4)
    updates, _ = opt.update(g_model, opt.init(eqx.filter(m, eqx.is_array)))
    trained = eqx.apply_updates(m, updates)
    # strength and scale are unconstrained (any lambda, mu > 0 is valid): keep them, so that the prox
    # below exists
    trained = eqx.tree_at(lambda t: (t.log_strength, t.log_scale), trained, (m.log_strength, m.log_scale))
    assert np.abs(np.asarray(trained.spline.raw_slopes) - np.asarray(m.spline.raw_slopes)).max() > 1
    slopes = np.asarray(trained.spline.slopes())
    assert slopes.min() >= -1 and slopes.max() <= 1
    assert np.abs(np.asarray(trained.conv(np.ones((N, N))))).max() < 1e-9 * float(trained.operator_norm())
    x = trained.prox(v, 0.5 / float(trained.weak_convexity))
    assert np.all(np.isfinite(x))


# ---- in solvers ---------------------------------------------------------------------------------------
LAM = 0.05


def _deblur(n=16, seed=0, dtype=np.float64):
    A = ij.operators.Convolution(ij.operators.gaussian_psf(5, 1.0, dtype=dtype), (n, n))
    x = np.zeros((n, n))
    x[4:12, 4:12] = 1.0
    x[6:9, 2:6] = 0.5
    y = np.asarray(A(jnp.asarray(x, dtype))) + 0.02 * np.random.default_rng(seed).standard_normal((n, n))
    return A, y.astype(dtype)


@functools.lru_cache(maxsize=None)
def _fista_reference():
    """(model, A, y, FISTA solution) in float64 (call under the x64 fixture)."""
    m = _model(seed=10, f64=True)
    A, y = _deblur()
    return m, A, y, ij.solve(ij.Problem(A, y, m, LAM), ij.solvers.FISTA(max_iters=3000, tol=1e-11))


def test_gradient_descent_decreases_monotonically(x64):
    m, A, y, _ = _fista_reference()
    # ||A|| = 1 exactly: a non-negative PSF summing to 1 passes constants unchanged
    step = 1.0 / (1.0 + LAM * float(m.lipschitz))
    objective = lambda x: 0.5 * jnp.sum((A(x) - y) ** 2) + LAM * m(x)  # noqa: E731

    def body(x, _):
        x = x - step * (A.T(A(x) - y) + LAM * m.grad(x))
        return x, objective(x)

    x0 = jnp.zeros_like(jnp.asarray(y))
    _, values = jax.jit(lambda x: jax.lax.scan(body, x, None, length=200))(x0)
    values = np.concatenate([[float(objective(x0))], np.asarray(values)])
    assert np.all(np.diff(values) <= 1e-13 * values[:-1])
    assert values[-1] < 0.5 * values[0]


def test_fista_matches_lbfgs(x64):
    m, A, y, sol = _fista_reference()
    assert bool(sol.stats.converged)
    n = y.shape[0]
    # the blur in numpy: circular convolution with the centred 5 x 5 PSF
    psf = np.zeros((n, n))
    psf[:5, :5] = np.asarray(ij.operators.gaussian_psf(5, 1.0, dtype=np.float64))
    otf = np.fft.rfft2(np.roll(psf, (-2, -2), (0, 1)))

    def blur(z, adjoint=False):
        return np.fft.irfft2((np.conj(otf) if adjoint else otf) * np.fft.rfft2(z), s=(n, n))

    np.testing.assert_allclose(blur(y), A(y), atol=1e-12)

    ridge = jax.jit(lambda z: (m(z), m.grad(z)))  # one dispatch per L-BFGS evaluation

    def obj(z):
        z = z.reshape(n, n)
        r = blur(z) - y
        value, grad = ridge(z)
        return 0.5 * np.sum(r**2) + LAM * float(value), (blur(r, True) + LAM * np.asarray(grad)).ravel()

    options = dict(maxiter=20000, ftol=1e-16, gtol=1e-11)
    res = scipy.optimize.minimize(obj, np.zeros(n * n), jac=True, method="L-BFGS-B", options=options)
    np.testing.assert_allclose(np.asarray(sol.x).ravel(), res.x, atol=1e-5 * np.abs(res.x).max())
    np.testing.assert_allclose(float(sol.stats.objective), res.fun, rtol=1e-10)


@pytest.mark.parametrize("solver", ["ADMM", pytest.param("PDHG", marks=pytest.mark.slow)])
def test_admm_and_pdhg_use_the_prox(solver, x64):
    """ADMM (the prox) and PDHG (the conjugate prox, by Moreau) accept the learned regulariser
    and approach FISTA's minimum (few iterations here: each takes an inner prox solve)."""
    m, A, y, ref = _fista_reference()
    problem = ij.Problem(A, y, m, LAM)
    start = float(problem.objective(np.zeros_like(y)))
    best = float(ref.stats.objective)
    solver = ij.solvers.ADMM(max_iters=20, tol=1e-4) if solver == "ADMM" else ij.solvers.PDHG(max_iters=50, tol=1e-4)
    sol = ij.solve(problem, solver)
    assert np.all(np.isfinite(sol.x))
    # measured: within 1.5e-4 of the initial gap (the blur leaves the minimiser ill-determined)
    assert best - 1e-12 <= float(sol.stats.objective) < best + 1e-3 * (start - best)


@pytest.mark.slow
def test_default_model_in_fista_admm_pdhg():
    """Float32, the default architecture: FISTA (gradient steps), ADMM and PDHG converge to the
    same minimiser."""
    m = ConvexRidge(key=jax.random.key(0))
    A, y = _deblur(dtype=np.float32)
    problem = ij.Problem(A, y, m, LAM)
    ref = ij.solve(problem, ij.solvers.FISTA(max_iters=2000, tol=1e-6))
    assert bool(ref.stats.converged) and ref.x.dtype == jnp.float32
    for solver in (ij.solvers.ADMM(max_iters=300, tol=1e-5), ij.solvers.PDHG(max_iters=1000, tol=1e-5)):
        sol = ij.solve(problem, solver)
        rel = float(jnp.linalg.norm(sol.x - ref.x) / jnp.linalg.norm(ref.x))
        assert rel < 5e-3, (type(solver).__name__, rel)


@pytest.mark.slow
def test_weakly_convex_in_solvers(x64):
    """WCRR-NN: FISTA reaches a stationary point (the objective is bounded below: psi_i >= 0);
    ADMM, whose adaptive penalty takes prox steps past 1 / rho, stops with the prox's clear
    run-time error instead of a wrong answer."""
    m = _model(True, seed=10, f64=True)
    A, y = _deblur()
    problem = ij.Problem(A, y, m, LAM)
    sol = ij.solve(problem, ij.solvers.FISTA(max_iters=3000, tol=1e-10))
    assert bool(sol.stats.converged) and float(sol.stats.objective) >= 0
    x = np.asarray(sol.x)
    stationarity = np.asarray(A.T(A(x) - y)) + LAM * np.asarray(m.grad(x))
    assert np.linalg.norm(stationarity) <= 1e-7 * np.linalg.norm(np.asarray(A.T(y)))
    with pytest.raises(Exception, match="weakly convex prox is not defined"):
        jax.block_until_ready(ij.solve(problem, ij.solvers.ADMM(max_iters=100, tol=1e-6)).x)


@pytest.mark.slow
def test_solve_differentiates_through_the_learned_regulariser():
    """Float32 FISTA; the solvers' implicit derivative reaches the regulariser's parameters."""
    m = _model(seed=11)
    A, y = _deblur(dtype=np.float32)
    solver = ij.solvers.FISTA(max_iters=500, tol=1e-6)

    @eqx.filter_jit
    def loss(mm):
        sol = ij.solve(ij.Problem(A, y, mm, LAM), solver)
        return jnp.sum(sol.x**2), sol

    (value, sol), g = eqx.filter_value_and_grad(loss, has_aux=True)(m)
    assert bool(sol.stats.converged) and sol.x.dtype == jnp.float32
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree_util.tree_leaves(g))
    assert float(jnp.linalg.norm(g.kernels[0])) > 0


# ---- transformations ---------------------------------------------------------------------------------
def test_dtypes_under_x64(x64):
    m = _model(seed=14)  # float32 parameters
    for dtype in (jnp.float32, jnp.float64):
        x = jax.ShapeDtypeStruct((N, N), dtype)
        for out in (jax.eval_shape(m, x), jax.eval_shape(m.grad, x), jax.eval_shape(lambda v: m.prox(v, 0.5), x)):
            assert out.dtype == dtype
    assert jax.eval_shape(m, jax.ShapeDtypeStruct((N, N), jnp.int32)).dtype == jnp.float64
    assert jax.eval_shape(lambda mm: mm.lipschitz, m).dtype == jnp.float32


# ---- errors and plotting -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(channels=(3, 8)), "channels"),
        (dict(channels=(1,)), "channels"),
        (dict(channels=(1, 0)), "channels"),
        (dict(kernel_size=4), "kernel_size"),
        (dict(kernel_size=0), "kernel_size"),
        (dict(knots=1), "knots"),
        (dict(knots=20), "knots"),
        (dict(spline_range=-0.1), "spline_range"),
        (dict(spline_range=float("nan")), "spline_range"),
        (dict(weakly_convex="yes"), "weakly_convex"),
        (dict(prox_tol=2.0), "prox_tol"),
        (dict(prox_max_iters=0), "prox_max_iters"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, name):
    with pytest.raises(ValueError, match=rf"ConvexRidge: `{name}` must .* got"):
        ConvexRidge(key=jax.random.key(0), **kwargs)


def test_bad_inputs_raise_clear_errors():
    m = _model()
    with pytest.raises(TypeError, match="`key`"):
        ConvexRidge(key=0)
    with pytest.raises(ValueError, match=r"2-D image of shape \(H, W\), got shape \(2, 8, 8\) \(batch with jax.vmap\)"):
        m(np.zeros((2, 8, 8), np.float32))
    with pytest.raises(ValueError, match="2-D image"):
        m.prox(np.zeros(8, np.float32), 1.0)
    with pytest.raises(TypeError, match="real"):
        m.grad(np.zeros((8, 8), np.complex64))
    with pytest.raises(ValueError, match="`z` must have shape"):
        m.conv_adjoint(np.zeros((5, 8, 8), np.float32))
    for bad in (-0.1, 0.0, np.inf):
        with pytest.raises(ValueError, match=r"ConvexRidge.denoise: `sigma` must be finite and > 0"):
            m.denoise(np.zeros((8, 8), np.float32), bad)
    with pytest.raises(ValueError, match=r"`sigma` must be a scalar or shape \(2,\) \(one per image\), got shape \(3,\)"):
        m.denoise(np.zeros((2, 8, 8), np.float32), np.ones(3))
    with pytest.raises(ValueError, match=r"`y` must have shape \(H, W\), \(B, H, W\), \(1, H, W\) or \(B, 1, H, W\) "
                                         r"\(the model has 1 channel\(s\)\), got shape \(1, 2, 8, 8\)"):
        m.denoise(np.zeros((1, 2, 8, 8), np.float32), 0.1)
    with pytest.raises(ValueError, match="`strength` must be a finite scalar > 0"):
        ConvexRidge(key=jax.random.key(0), strength=0.0)
    with pytest.raises(ValueError, match="`noise_calibration` must be pairs"):
        ConvexRidge(key=jax.random.key(0), noise_calibration=((0.1, 1.0), (0.05, 1.0)))
    with pytest.raises(ValueError, match=r"operator_norm: `shape` must be two ints >= 1 \(H, W\), got \(8,\)"):
        m.operator_norm((8,))


def test_plot_filters(x64):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = _model(True, f64=True)
    fig = m.plot_filters()
    assert isinstance(fig, matplotlib.figure.Figure)
    assert len(fig.axes) == 6 + 2  # one image per filter, activations, potentials
    assert len(fig.axes[-2].lines) >= 6
    plt.close(fig)
