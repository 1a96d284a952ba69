"""DEQ: the fixed point and its reported residual, Anderson against the plain iteration, the
implicit gradient against float64 central differences, memory flat in the forward iterations,
the Lipschitz certificate against empirical ratios, jit/vmap, and input errors."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import invjax as ij
from invjax.learned import measure, supervised_loss
from invjax.learned import DEQ, anderson
from invjax.operators.base import LinearOperator


class _Matrix(LinearOperator):
    """A dense matrix acting on flattened 8x8 images (a tiny operator with a nullspace)."""

    matrix: jax.Array
    shape: tuple = eqx.field(static=True)

    @property
    def in_shape(self):
        return self.shape

    @property
    def out_shape(self):
        return (self.matrix.shape[0],)

    @property
    def dtype(self):
        return self.matrix.dtype

    def mv(self, x):
        return self.matrix.astype(x.dtype) @ x.ravel()

    def rmv(self, y):
        return (self.matrix.T.astype(y.dtype) @ y).reshape(self.shape)


def _tiny_op(dtype=np.float32, m=40):
    mat = np.random.default_rng(0).standard_normal((m, 64)) / 8.0
    return _Matrix(jnp.asarray(mat, dtype), (8, 8))


def _randomise(model, seed=0, bias=0.1):
    """Random biases (zero at init) so that the network's offsets matter."""
    rng = np.random.default_rng(seed)
    bs = tuple(jnp.asarray(bias * rng.standard_normal(b.shape), b.dtype) for b in model.network.biases)
    return eqx.tree_at(lambda m: m.network.biases, model, bs)


def _image(n=8, seed=0):
    x = np.zeros((n, n))
    x[n // 4: 3 * n // 4, n // 4: 3 * n // 2 // 2 + 1] = 1.0
    return x + 0.1 * np.random.default_rng(seed).random((n, n))


@pytest.fixture(scope="module")
def tiny():
    op = _tiny_op()
    model = _randomise(DEQ(op, width=6, depth=3, tol=1e-5, key=jax.random.PRNGKey(0)))
    y = op(jnp.asarray(_image(), jnp.float32))
    return op, model, y


def test_fixed_point_and_reported_residual(tiny):
    op, model, y = tiny
    x, stats = model.solve(y)
    assert x.shape == op.in_shape and x.dtype == jnp.float32
    assert bool(stats.converged) and 0 < int(stats.iterations) < model.max_iters
    recomputed = jnp.linalg.norm(model.fixed_point_map(x, y) - x) / jnp.linalg.norm(x)
    assert float(stats.residual) <= model.tol
    np.testing.assert_allclose(float(stats.residual), float(recomputed), rtol=1e-3, atol=1e-7)
    np.testing.assert_allclose(model(y), x)  # __call__ is solve's x


def test_anderson_and_plain_iteration_reach_the_same_fixed_point(x64):
    # relaxation 0.1: Lip(f) <= 0.99 and the nullspace contracts by only ~0.9 per plain step.
    # float32 parameters, float64 data: the solve runs in float64
    op = _tiny_op(np.float64)
    kw = dict(width=6, depth=3, relaxation=0.1, tol=1e-10, max_iters=2000, key=jax.random.PRNGKey(3))
    plain = _randomise(DEQ(op, memory=1, **kw))
    accel = _randomise(DEQ(op, memory=6, **kw))
    y = op(jnp.asarray(_image(), jnp.float64))
    xp, sp = plain.solve(y)
    xa, sa = accel.solve(y)
    assert xa.dtype == jnp.float64 and sa.residual.dtype == jnp.float64
    assert bool(sp.converged) and bool(sa.converged)
    assert int(sa.iterations) * 3 < int(sp.iterations), (int(sa.iterations), int(sp.iterations))
    # both within tol of the unique fixed point: |x - x*| <= res |x| / (1 - Lip)
    bound = 2 * 1e-10 / (1 - plain.lipschitz_bound())
    assert float(jnp.linalg.norm(xa - xp) / jnp.linalg.norm(xp)) < bound
    # float32 data stay float32 under x64
    x32, s32 = jax.eval_shape(accel.solve, y.astype(jnp.float32))
    assert x32.dtype == jnp.float32 and s32.residual.dtype == jnp.float32


def test_anderson_solves_a_linear_fixed_point():
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.standard_normal((30, 30)))
    m = jnp.asarray(q @ np.diag(np.linspace(-0.95, 0.95, 30)) @ q.T, jnp.float32)
    b = jnp.asarray(rng.standard_normal(30), jnp.float32)
    x, res, it = jax.jit(lambda b: anderson(lambda x: m @ x + b, jnp.zeros(30), memory=10, tol=1e-5))(b)
    exact = np.linalg.solve(np.eye(30) - np.asarray(m), np.asarray(b))
    # |x - x*| <= res |x| / (1 - Lip) with Lip = 0.95
    assert np.linalg.norm(np.asarray(x) - exact) <= 20 * 1e-5 * np.linalg.norm(exact) * 1.01
    assert float(res) <= 1e-5 and int(it) < 60


def test_implicit_gradient_matches_central_differences(x64):
    op = _tiny_op(np.float64)
    # power_iters=300: the normalisation's gradient (through the last Rayleigh quotient) is then
    # the derivative of the computed function to ~1e-10
    model = DEQ(op, width=4, depth=3, relaxation=0.7, tol=1e-13, max_iters=400, power_iters=300, dtype=jnp.float64,
                key=jax.random.PRNGKey(1))
    model = _randomise(model, bias=0.3)
    x_true = jnp.asarray(_image(), jnp.float64)
    y = op(x_true) + 0.05 * jax.random.normal(jax.random.PRNGKey(2), op.out_shape, jnp.float64)
    weight = jax.random.normal(jax.random.PRNGKey(3), op.in_shape, jnp.float64)

    def loss(m, y):
        x = m(y)
        return jnp.sum(weight * x) + 0.5 * jnp.sum((x - x_true) ** 2)

    # one compiled program for the values and the gradient (the tests' cost is compilation)
    value_and_grad = eqx.filter_jit(eqx.filter_value_and_grad(lambda my: loss(*my)))
    g_model, g_y = value_and_grad((model, y))[1]

    def loss_jit(m, y):
        return value_and_grad((m, y))[0]

    h = 1e-6
    where = {
        "first kernel": (lambda m: m.network.weights[0], (0, 0, 1, 1)),
        "last kernel": (lambda m: m.network.weights[2], (0, 3, 2, 1)),
        "bias": (lambda m: m.network.biases[1], (2,)),
        "step_logit": (lambda m: m.step_logit, ()),
    }
    for name, (get, idx) in where.items():
        leaf = get(model)
        plus = eqx.tree_at(get, model, leaf.at[idx].add(h))
        minus = eqx.tree_at(get, model, leaf.at[idx].add(-h))
        fd = (loss_jit(plus, y) - loss_jit(minus, y)) / (2 * h)
        np.testing.assert_allclose(float(get(g_model)[idx]), float(fd), rtol=1e-6, atol=1e-12, err_msg=name)
    for i in (7,):  # the data
        fd = (loss_jit(model, y.at[i].add(h)) - loss_jit(model, y.at[i].add(-h))) / (2 * h)
        np.testing.assert_allclose(float(g_y[i]), float(fd), rtol=1e-6, atol=1e-12, err_msg=f"y[{i}]")
    # forward mode (the same implicit layer, solving with I - J_x instead of its transpose): a
    # direction in the data and the step together, against central differences along it
    dy = jax.random.normal(jax.random.PRNGKey(4), y.shape, jnp.float64)

    def along(t):
        m = eqx.tree_at(lambda m: m.step_logit, model, model.step_logit + t)
        return m(y + t * dy)

    x0, dx = eqx.filter_jit(lambda t: jax.jvp(along, (t,), (jnp.ones_like(t),)))(jnp.zeros((), jnp.float64))
    fd = (eqx.filter_jit(along)(jnp.asarray(h)) - eqx.filter_jit(along)(jnp.asarray(-h))) / (2 * h)
    np.testing.assert_allclose(np.asarray(x0), np.asarray(model(y)), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(dx), np.asarray(fd), rtol=1e-6, atol=1e-9 * float(jnp.max(jnp.abs(fd))))


def test_gradient_memory_is_flat_in_forward_iterations(tiny):
    op, _, y = tiny
    x_true = jnp.asarray(_image(), jnp.float32)

    def temp_bytes(max_iters):
        # tol 0: every solve runs max_iters (and, unconverged by construction, is not raised)
        model = DEQ(op, width=6, depth=3, tol=0.0, max_iters=max_iters, failure="ignore", key=jax.random.PRNGKey(0))
        params, static = eqx.partition(model, eqx.is_inexact_array)
        grad = jax.jit(jax.grad(lambda p: jnp.mean((eqx.combine(p, static)(y) - x_true) ** 2)))
        return grad.lower(params).compile().memory_analysis().temp_size_in_bytes

    small, large = temp_bytes(10), temp_bytes(100)
    assert large <= 1.05 * small + 1024, (small, large)


def test_lipschitz_certificate_bounds_empirical_ratios(tiny):
    op, model, y = tiny
    bound = model.lipschitz_bound()
    assert bound == pytest.approx(1 - model.relaxation * (1 - model.lipschitz)) and bound < 1
    # a network with large random weights: the normalisation alone must keep the bound
    rng = np.random.default_rng(5)
    ws = tuple(jnp.asarray(5 * rng.standard_normal(w.shape), w.dtype) for w in model.network.weights)
    strong = eqx.tree_at(lambda m: m.network.weights, model, ws)
    f = jax.jit(jax.vmap(lambda a: strong.fixed_point_map(a, y)))
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    a = jax.random.normal(keys[0], (64,) + op.in_shape) + 1.0
    b = a + jax.random.normal(keys[1], a.shape) * jnp.logspace(-3, 0, 64)[:, None, None]
    ratios = jnp.linalg.norm((f(a) - f(b)).reshape(64, -1), axis=1) / jnp.linalg.norm((a - b).reshape(64, -1), axis=1)
    assert float(jnp.max(ratios)) < bound
    # the local constant ||J_f(x)|| by power iteration on J^T J: also below the bound
    assert 0.5 < float(_jacobian_norm(strong, a[0], y)) < bound


@eqx.filter_jit
def _jacobian_norm(model, x, y, iters=100):
    # J from the transpose of the VJP (the map has a custom VJP and no forward mode)
    fx, vjp = jax.vjp(lambda x: model.fixed_point_map(x, y), x)
    transposed = jax.linear_transpose(vjp, fx)

    def jvp(v):
        return transposed((v,))[0]

    def power(_, v):
        w = vjp(jvp(v))[0]
        return w / jnp.linalg.norm(w)

    v = jax.lax.fori_loop(0, iters, power, jnp.ones_like(x) / jnp.sqrt(x.size))
    return jnp.linalg.norm(jvp(v))


def test_jit_and_vmap_agree_with_single_calls(tiny):
    op, model, _ = tiny
    xs = jnp.stack([jnp.asarray(_image(seed=s), jnp.float32) for s in range(3)])
    ys = measure(op, xs, key=jax.random.PRNGKey(1), relative_noise=0.05)
    batch, stats = jax.jit(jax.vmap(model.solve))(ys)
    assert batch.shape == (3, 8, 8) and stats.iterations.shape == (3,) and bool(jnp.all(stats.converged))
    for i in range(3):
        x, s = model.solve(ys[i])
        np.testing.assert_allclose(batch[i], x, rtol=1e-4, atol=1e-5)
        assert int(s.iterations) == int(stats.iterations[i])


@pytest.mark.slow
def test_ct_vmap_and_training_steps():
    op = ij.operators.ParallelBeam2D((16, 16), np.linspace(0, np.pi, 8, endpoint=False))
    model = DEQ(op, width=8, depth=3, key=jax.random.PRNGKey(4))
    xs = ij.phantoms.random_ellipses(jax.random.PRNGKey(0), 16, 4)
    ys = measure(op, xs, key=jax.random.PRNGKey(1), relative_noise=0.05)
    batch, stats = jax.jit(jax.vmap(model.solve))(ys)
    assert bool(jnp.all(stats.converged))
    np.testing.assert_allclose(batch[1], model(ys[1]), rtol=1e-4, atol=1e-5)
    data = lambda key, step: ij.phantoms.random_ellipses(key, 16, 4)  # noqa: E731
    trained, hist = ij.learned.train(model, supervised_loss(op, relative_noise=0.05), data, optax.adam(1e-3), 20, key=jax.random.PRNGKey(5),
                                     progress=False)
    assert np.all(np.isfinite(hist.loss)) and hist.loss[-5:].mean() < hist.loss[:5].mean()
    assert trained.lipschitz_bound() == model.lipschitz_bound()


def test_bad_inputs_raise_clear_errors(tiny):
    op, model, y = tiny
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match=r"`y` must have shape op.out_shape = \(40,\), got \(41,\)"):
        model(jnp.zeros(41))
    with pytest.raises(ValueError, match=r"`y`.*got \(2, 40\).*jax.vmap"):
        model(jnp.zeros((2, 40)))
    with pytest.raises(ValueError, match=r"`x0` must have shape op.in_shape = \(8, 8\), got \(8, 9\)"):
        model.solve(y, x0=jnp.zeros((8, 9)))
    with pytest.raises(TypeError, match="`y` must be real"):
        model(jnp.zeros(40, jnp.complex64))
    with pytest.raises(ValueError, match=r"`op`.*expected in_shape \(H, W\), got \(64,\)"):
        DEQ(ij.operators.Dense(jnp.ones((4, 64))), key=key)
    with pytest.raises(TypeError, match="`op` must be real"):
        DEQ(ij.operators.CartesianMRI(jnp.ones((8, 8), bool)), key=key)
    with pytest.raises(TypeError, match="`op` must be an invjax LinearOperator"):
        DEQ(np.ones((4, 4)), key=key)
    for bad in (1.0, 1.2, 0.0):
        with pytest.raises(ValueError, match="`lipschitz` must lie in"):
            DEQ(op, lipschitz=bad, key=key)
    with pytest.raises(ValueError, match="`relaxation` must lie in"):
        DEQ(op, relaxation=0.0, key=key)
    with pytest.raises(ValueError, match="`step` must lie in"):
        DEQ(op, step=2.0 / model.op_norm**2, key=key)
    with pytest.raises(ValueError, match="`init`"):
        DEQ(op, init="fbp", key=key)
    with pytest.raises(ValueError, match="`max_iters`"):
        DEQ(op, max_iters=0, key=key)
    with pytest.raises(ValueError, match="supervised_loss: the batch must have shape"):
        supervised_loss(op, relative_noise=0.05)(model, jnp.zeros((2, 8, 9)), key)
