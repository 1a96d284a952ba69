"""Every registered functional through the same checks: prox and conjugate-prox optimality,
Moreau identity, jit, vmap, grad, dtypes. See tests/registry.py for the registry.

The checks are compiled as one program each (compilation, not arithmetic, dominates the run
time of these tiny inputs), on one input shape so that eager primitives are cached.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from invjax.functionals import TV, Scaled
from tests.registry import FUNCTIONALS, random_input, real_inner

NAMES = sorted(FUNCTIONALS)
SHAPE = (5, 4)


def _points(f, p, step, noise, w, restricted):
    """Comparison points: perturbations of ``p`` at three scales (and, for functionals with a
    restricted domain, prox outputs, which lie in the domain)."""
    k = noise.shape[0] // 3
    pts = [p + s * noise[i * k : (i + 1) * k] for i, s in enumerate((1e-3, 1e-1, 1.0))]
    if restricted:
        pts.append(jax.vmap(f.prox, (0, None))(w, step))
    return jnp.concatenate(pts + [jnp.zeros_like(p)[None]])


def _margins(f, x, g, ys):
    """``f(y) - f(x) - Re<g, y - x>`` for each ``y`` (all >= 0 iff ``g`` is a subgradient), and
    the size of the terms, to scale the round-off tolerance."""
    fx = f(x)
    margins = jax.vmap(f)(ys) - fx - jax.vmap(lambda y: real_inner(g, y - x))(ys)
    norm = jnp.linalg.norm
    size = 1 + jnp.abs(fx) + norm(g) * (norm(x) + jnp.max(jax.vmap(norm)(ys)))
    return fx, margins / size


@eqx.filter_jit
def _prox_conditions(f, v, step, noise, w, restricted):
    # prox: (v - p) / step is a subgradient of f at p
    p = f.prox(v, step)
    fp, mp = _margins(f, p, (v - p) / step, _points(f, p, step, noise, w, restricted))
    # prox_conj: u = prox_{step f*}(v) iff u is a subgradient of f at x = (v - u) / step
    u = f.prox_conj(v, step)
    x = (v - u) / step
    if restricted:  # undo round-off that leaves the domain's boundary by ~1e-16
        x = jnp.where(jnp.isfinite(f(x)), x, f.prox(x, 1e-12))
    fx, mx = _margins(f, x, u, _points(f, x, 1.0, noise, w, restricted))
    return p, fp, mp, fx, mx


def check_prox_and_conj(f, rng, shape, step, complex_, restricted, atol, n=12):
    """Assert the prox and conjugate-prox optimality conditions at a random point."""
    v = random_input(rng, shape, complex_=complex_, scale=2.0)
    noise = jnp.asarray(np.stack([random_input(rng, shape, v.dtype, complex_) for _ in range(n)]))
    w = jnp.asarray(np.stack([random_input(rng, shape, v.dtype, complex_, 2.0) for _ in range(n // 4)]))
    step = jnp.asarray(step, jnp.finfo(v.dtype).dtype)
    p, fp, mp, fx, mx = _prox_conditions(f, v, step, noise, w, restricted)
    assert p.shape == v.shape and p.dtype == v.dtype
    for fval, margins in ((fp, mp), (fx, mx)):
        assert np.isfinite(float(fval)), "the point must lie in the domain"
        assert float(jnp.min(margins)) >= -atol, np.asarray(margins)


@pytest.mark.parametrize("name", NAMES)
def test_prox_and_prox_conj_optimality(name, rng, x64):
    case = FUNCTIONALS[name]
    f = case.make(rng, SHAPE)
    for complex_ in (False, True) if case.complex_ok else (False,):
        for step in (0.05, 1.0, 7.0):
            check_prox_and_conj(f, rng, SHAPE, step, complex_, case.restricted, atol=1e-8)


@settings(
    max_examples=8, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    name=st.sampled_from(NAMES),
    shape=st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple),
    log_step=st.floats(-3, 2),
    seed=st.integers(0, 2**31 - 1),
    complex_=st.booleans(),
)
def test_property_prox_optimality(name, shape, log_step, seed, complex_, x64):
    """Hypothesis: random functionals, shapes, steps and seeds satisfy the prox conditions."""
    rng = np.random.default_rng(seed)
    case = FUNCTIONALS[name]
    f = case.make(rng, shape)
    complex_ = complex_ and case.complex_ok
    check_prox_and_conj(f, rng, shape, 10.0**log_step, complex_, case.restricted, atol=1e-8)


@pytest.mark.parametrize("name", NAMES)
def test_moreau_identity_float32(name, rng):
    """prox_f(v) + step * prox_{f*/step}(v / step) = v."""
    f = FUNCTIONALS[name].make(rng, SHAPE)
    v = random_input(rng, SHAPE, scale=2.0)
    step = 0.8
    lhs = f.prox(v, step) + step * f.prox_conj(v / step, 1 / step)
    np.testing.assert_allclose(lhs, v, rtol=1e-5, atol=1e-5)


def _dtypes(f, v, step=0.5):
    """Output dtypes of prox, prox_conj and value (traced only, nothing is compiled)."""
    p, u, val = jax.eval_shape(lambda v: (f.prox(v, step), f.prox_conj(v, step), f(f.prox(v, step))), v)
    assert p.shape == u.shape == v.shape and val.shape == ()
    return p.dtype, u.dtype, val.dtype


@pytest.mark.parametrize("name", NAMES)
def test_dtypes(name, rng):
    f = FUNCTIONALS[name].make(rng, SHAPE)
    assert _dtypes(f, jnp.zeros(SHAPE, jnp.float32)) == (jnp.float32,) * 3
    # integer input is promoted to the default float
    assert _dtypes(f, jnp.ones(SHAPE, jnp.int32)) == (jnp.float32,) * 3
    vc = jnp.zeros(SHAPE, jnp.complex64)
    if FUNCTIONALS[name].complex_ok:
        assert _dtypes(f, vc) == (jnp.complex64, jnp.complex64, jnp.float32)
    else:
        with pytest.raises(TypeError, match="must be real"):
            f.prox(vc, 0.5)


@pytest.mark.parametrize("name", NAMES)
def test_float64_preserved(name, rng, x64):
    f = FUNCTIONALS[name].make(rng, SHAPE)
    assert _dtypes(f, jnp.zeros(SHAPE, jnp.float64)) == (jnp.float64,) * 3
    # float64 parameters do not upcast float32 inputs
    assert _dtypes(f, jnp.zeros(SHAPE, jnp.float32)) == (jnp.float32,) * 3
    if FUNCTIONALS[name].complex_ok:
        assert _dtypes(f, jnp.zeros(SHAPE, jnp.complex128)) == (jnp.complex128, jnp.complex128, jnp.float64)


@pytest.mark.parametrize("name", NAMES)
def test_jit_and_vmap_batch(name, rng):
    f = FUNCTIONALS[name].make(rng, SHAPE)
    vs = jnp.stack([random_input(rng, SHAPE, scale=2.0) for _ in range(4)])
    steps = jnp.asarray([0.1, 0.5, 1.0, 3.0], jnp.float32)

    @jax.jit
    def batched(f, vs, steps):  # the functional itself is a pytree argument
        p = jax.vmap(f.prox)(vs, steps)
        return p, jax.vmap(f.prox_conj, (0, None))(vs, 0.7), jax.vmap(f)(p)

    p, conj, values = batched(f, vs, steps)
    for i in range(4):
        np.testing.assert_allclose(p[i], f.prox(vs[i], steps[i]), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(conj[i], f.prox_conj(vs[i], 0.7), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(values[i], f(p[i]), rtol=1e-5)


def _unrolled(f):
    """Reverse mode through the TV prox needs the scan loop; run all iterations (no freeze)."""
    if isinstance(f, Scaled):
        return Scaled(_unrolled(f.functional), f.scale)
    if isinstance(f, TV):
        return TV(f.isotropic, f.boundary, tol=1e-30, max_iters=30, unroll=True)
    return f


@eqx.filter_jit
def _grads_and_fds(f, v, s, c, d, eps):
    def loss(v, s):
        return jnp.sum(c * f.prox(v, s)) + jnp.sum(d * f.prox_conj(v, s))

    gv, gs = jax.grad(loss, argnums=(0, 1))(v, s)
    fd_v = (loss(v + eps * d, s) - loss(v - eps * d, s)) / (2 * eps)
    fd_s = (loss(v, s + eps) - loss(v, s - eps)) / (2 * eps)
    return jnp.sum(gv * d), fd_v, gs, fd_s


# one TV entry suffices here: compiling the reverse pass of the unrolled loop takes seconds
@pytest.mark.parametrize("name", [n for n in NAMES if n != "TV-anisotropic-periodic"])
def test_grad_of_prox_matches_finite_differences(name, rng, x64):
    f = _unrolled(FUNCTIONALS[name].make(rng, SHAPE))
    v, c, d = (random_input(rng, SHAPE, scale=2.0) for _ in range(3))
    gv, fd_v, gs, fd_s = _grads_and_fds(f, v, jnp.asarray(0.7), c, d, 1e-6)
    np.testing.assert_allclose(float(gv), float(fd_v), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(float(gs), float(fd_s), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_value_gradient_finite_at_zero_and_kinks(name, rng):
    case = FUNCTIONALS[name]
    f = case.make(rng, SHAPE)
    if f.indicator:
        return
    x = random_input(rng, SHAPE).at[0].set(0.0).at[:, 1].set(1.0)
    real_pts = [jnp.abs(x) + 0.5, jnp.ones(SHAPE)] if name.startswith("Poisson") else [x, jnp.zeros(SHAPE)]
    cplx_pts = [jnp.zeros(SHAPE, jnp.complex64)] if case.complex_ok else []
    grads = jax.jit(lambda f, pts, cpts: [jax.grad(f)(p) for p in pts + cpts])(f, real_pts, cplx_pts)
    for g in grads:
        assert np.all(np.isfinite(np.asarray(g)))


SMOOTH = [n for n in NAMES if FUNCTIONALS[n].make(np.random.default_rng(0), SHAPE).smooth]


@pytest.mark.parametrize("name", SMOOTH)
def test_smooth_grad_matches_autodiff(name, rng, x64):
    f = FUNCTIONALS[name].make(rng, SHAPE)
    assert f.lipschitz is not None
    x, y = random_input(rng, SHAPE, scale=2.0), random_input(rng, SHAPE, scale=2.0)
    np.testing.assert_allclose(f.grad(x), jax.grad(f)(x), rtol=1e-10, atol=1e-12)
    # complex: grad is the real-inner-product gradient, the conjugate of jax.grad's convention
    z = random_input(rng, SHAPE, complex_=True, scale=2.0)
    np.testing.assert_allclose(f.grad(z), jnp.conj(jax.grad(f)(z)), rtol=1e-10, atol=1e-12)
    # the Lipschitz constant bounds the gradient's variation
    lhs = float(jnp.linalg.norm(f.grad(x) - f.grad(y)))
    assert lhs <= float(f.lipschitz) * float(jnp.linalg.norm(x - y)) * (1 + 1e-12)
