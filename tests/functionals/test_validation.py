"""Bad arguments raise clear errors at trace time; traced parameters are accepted; parameters
are differentiable and vmappable pytree leaves; scaling and data helpers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import invjax.functionals as F

V = jnp.asarray([[-1.5, 0.2, 3.0], [0.0, -0.4, 1.1]])


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: F.SquaredL2(weights=[1.0, -1.0]), r"SquaredL2: `weights` must be >= 0"),
        (lambda: F.SquaredL2(data=[1.0, np.nan]), r"SquaredL2: `data` must be finite"),
        (lambda: F.L1(weights=-0.5), r"L1: `weights` must be >= 0, got -0.5"),
        (lambda: F.L1(weights=np.inf), r"L1: `weights` must be finite"),
        (lambda: F.Huber(delta=0.0), r"Huber: `delta` must be > 0, got 0.0"),
        (lambda: F.Huber(delta=-1.0), r"Huber: `delta` must be > 0"),
        (lambda: F.Box(1.0, 0.0), r"Box: `lower` must be <= `upper` everywhere, got lower=1.0, upper=0.0"),
        (lambda: F.Box(np.zeros(3), [1.0, -1.0, 1.0]), r"Box: `lower` must be <= `upper`.*1 entries"),
        (lambda: F.Box(np.nan, 1.0), r"Box: `lower` must not contain NaN"),
        (lambda: F.PoissonLikelihood([1.0, -2.0]), r"PoissonLikelihood: `data` must be >= 0"),
        (lambda: F.PoissonLikelihood([1.0], background=-0.1), r"`background` must be >= 0"),
        (lambda: F.TV(boundary="zero"), r"TV: `boundary` must be one of"),
        (lambda: F.TV(tol=0.0), r"TV: `tol` must be finite and > 0, got 0.0"),
        (lambda: F.TV(max_iters=0), r"TV: `max_iters` must be an int >= 1, got 0"),
        (lambda: F.TV(axes=(0, 0)), r"TV: `axes` must be distinct"),
        (lambda: -1.0 * F.L1(), r"Scaled: `scale` must be >= 0, got -1.0"),
        (lambda: F.L1() / 0.0, r"Scaled: `scale` must be finite"),
        (lambda: F.Scaled(F.L1(), jnp.ones(2)), r"Scaled: `scale` must be a scalar"),
    ],
)
def test_bad_parameters_raise_value_error(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: F.L21(axis=1.5), r"L21: `axis` must be an int, got 1.5"),
        (lambda: F.Box(0j, 1.0), r"Box: `lower` must be real"),
        (lambda: F.L1(weights=1j), r"L1: `weights` must be real"),
        (lambda: F.TV(isotropic="yes"), r"TV: `isotropic` must be a bool"),
        (lambda: F.Scaled("L1", 2.0), r"Scaled: `functional` must be a Functional"),
    ],
)
def test_bad_types_raise_type_error(build, match):
    with pytest.raises(TypeError, match=match):
        build()


@pytest.mark.parametrize("f", [F.L1(), F.SquaredL2(), F.Huber(), F.NonNegative(), F.L21(), 2.0 * F.L1()])
def test_bad_steps(f):
    with pytest.raises(ValueError, match=r"`step` must be finite and >= 0, got -1.0"):
        f.prox(V, -1.0)
    with pytest.raises(ValueError, match=r"`step` must be finite and >= 0, got inf"):
        f.prox(V, np.inf)
    with pytest.raises(ValueError, match=r"`step` must be a scalar"):
        f.prox(V, jnp.ones(2))
    with pytest.raises(ValueError, match=r"prox_conj: `step` must be finite and > 0, got 0.0"):
        f.prox_conj(V, 0.0)
    # step 0 is the identity for finite functionals (projection for indicators)
    np.testing.assert_allclose(f.prox(V, 0.0), V if not f.indicator else jnp.maximum(V, 0))


def test_tv_bad_step_and_shapes():
    with pytest.raises(ValueError, match=r"TV.prox: `step` must be finite and >= 0, got -0.1"):
        F.TV().prox(V, -0.1)
    with pytest.raises(ValueError, match=r"at least one axis"):
        F.TV()(jnp.asarray(1.0))
    with pytest.raises(ValueError, match=r"axes"):
        F.TV(axes=(0, 3))(V)


def test_shape_mismatch_and_axis_errors():
    msg = r"SquaredL2: `data` of shape \(3,\) does not broadcast to the input shape \(3, 2\)"
    with pytest.raises(ValueError, match=msg):
        F.SquaredL2(data=jnp.ones(3))(jnp.ones((3, 2)))
    with pytest.raises(ValueError, match=r"L1.prox: `weights` of shape \(4,\)"):
        F.L1(weights=jnp.ones(4)).prox(V, 1.0)
    with pytest.raises(ValueError, match=r"L21: `axis`=2 is out of range for an input of shape \(2, 3\)"):
        F.L21(axis=2)(V)
    with pytest.raises(ValueError, match=r"L21.prox: `axis`=-3"):
        F.L21(axis=-3).prox(V, 1.0)
    with pytest.raises(TypeError, match=r"NonNegative.prox: argument `v` must be real"):
        F.NonNegative().prox(V + 1j, 1.0)
    with pytest.raises(ValueError, match=r"no `data`.*with_data"):
        F.PoissonLikelihood()(V)
    with pytest.raises(NotImplementedError, match=r"L1 is not differentiable"):
        F.L1().grad(V)


def test_traced_parameters_skip_concrete_checks_and_are_leaves():
    x = jnp.asarray([0.5, -2.0, 3.0])
    # built inside jit from traced values: no concrete check, no error
    out = jax.jit(lambda w, lo, hi: (F.L1(weights=w).prox(x, 1.0), F.Box(lo, hi).prox(x, 1.0)))(
        jnp.ones(3), -1.0, 1.0
    )
    np.testing.assert_allclose(out[0], [0.0, -1.0, 2.0])
    np.testing.assert_allclose(out[1], [0.5, -1.0, 1.0])
    # vmap over weights and steps
    ws = jnp.asarray([0.0, 1.0, 2.0])
    batched = jax.vmap(lambda w: F.L1(weights=w).prox(x, 1.0))(ws)
    np.testing.assert_allclose(batched[2], [0.0, 0.0, 1.0])
    # gradients with respect to parameters
    d = jnp.asarray([1.0, 2.0, 3.0])
    np.testing.assert_allclose(jax.grad(lambda d: F.SquaredL2(data=d)(x))(d), d - x)
    g = jax.grad(lambda c: (c * F.L1())(x))(2.0)
    assert float(g) == pytest.approx(5.5)
    g = jax.grad(lambda delta: F.Huber(delta).prox(x, 1.0).sum())(1.0)
    assert np.isfinite(float(g))
    # a functional passes through jit as an argument with its leaves
    f = F.SquaredL2(data=d, weights=2.0)
    np.testing.assert_allclose(jax.jit(lambda f, x: f.prox(x, 0.5))(f, x), (x + d) / 2)


def test_scaling_algebra():
    f = F.L1()
    assert isinstance(2.0 * f, F.Scaled) and isinstance(f * 2.0, F.Scaled)
    nested = 3.0 * (2.0 * f)
    assert isinstance(nested.functional, F.L1) and float(nested.scale) == 6.0
    assert float((f / 4.0).scale) == 0.25
    np.testing.assert_allclose((2.0 * f).prox(V, 0.5), f.prox(V, 1.0))
    np.testing.assert_allclose((2.0 * f)(V), 2 * f(V))
    sq = 3.0 * F.SquaredL2(weights=jnp.asarray([1.0, 2.0, 0.5]))
    assert sq.smooth and float(sq.lipschitz) == 6.0
    np.testing.assert_allclose(sq.grad(V), 3 * F.SquaredL2(weights=jnp.asarray([1.0, 2.0, 0.5])).grad(V))
    assert not (2.0 * F.TV()).smooth and (2.0 * F.TV()).lipschitz is None
    box = 0.0 * F.Box(0.0, 1.0)  # c * indicator is the indicator, even for c = 0
    assert box.indicator and float(box(V)) == np.inf and float(box(jnp.clip(V, 0, 1))) == 0.0


def test_fidelity_data_helpers():
    y = jnp.asarray([1.0, 2.0, 0.0])
    f = F.SquaredL2(weights=2.0).with_data(y)
    np.testing.assert_allclose(f.data, y)
    assert float(f.weights) == 2.0
    assert F.SquaredL2().data is None and F.SquaredL2().weights is None
    assert float(F.SquaredL2().lipschitz) == 1.0
    p = F.PoissonLikelihood(background=0.5, normalized=False).with_data(y)
    np.testing.assert_allclose(p.data, y)
    assert float(p.background) == 0.5 and p.normalized is False
    assert float(F.PoissonLikelihood(y, background=0.5)(y - 0.5)) == pytest.approx(0.0, abs=1e-6)


# ---- the abstract base: a subclass that forgets its value or prox fails at construction -------


def test_functional_without_prox_fails_at_construction():
    class ValueOnly(F.Functional):
        def __call__(self, x):
            return jnp.sum(jnp.abs(x))

    with pytest.raises(TypeError, match="abstract method.*prox"):
        ValueOnly()


def test_functional_without_value_fails_at_construction():
    class ProxOnly(F.Functional):
        def prox(self, v, step):
            return v

    with pytest.raises(TypeError, match="abstract method.*__call__"):
        ProxOnly()


def test_minimal_functional_inherits_prox_conj_by_moreau():
    """value and prox are all a subclass must write; prox_conj of |x| is the clip to [-1, 1]."""

    class Abs(F.Functional):
        def __call__(self, x):
            return jnp.sum(jnp.abs(x))

        def prox(self, v, step):
            return jnp.sign(v) * jnp.maximum(jnp.abs(v) - step, 0)

    v = jnp.array([-3.0, -0.5, 0.2, 2.0])
    np.testing.assert_allclose(Abs().prox_conj(v, 0.7), np.clip(np.asarray(v), -1, 1), rtol=1e-6)
