"""The secant optimizer on functions with known minimisers."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import invjax as ij


def _run(f, p, steps, opt=None):
    opt = ij.tuning.secant() if opt is None else opt
    state = opt.init(p)
    for _ in range(steps):
        u, state = opt.update(jax.grad(f)(p), state, p)
        p = optax.apply_updates(p, u)
    return p


def test_secant_is_exact_on_a_quadratic_after_two_steps():
    f = lambda p: jnp.sum(3.0 * (p - jnp.asarray([1.0, -2.0])) ** 2)  # noqa: E731
    p = _run(f, jnp.zeros(2), 2)  # a first step of 1.0, then the secant is Newton's step
    np.testing.assert_allclose(np.asarray(p), [1.0, -2.0], atol=1e-5)


def test_secant_converges_fast_per_coordinate_with_different_curvatures():
    target = jnp.asarray([0.5, -3.0, 2.0])
    f = lambda p: jnp.sum(jnp.asarray([0.1, 1.0, 10.0]) * jnp.cosh(p - target))  # noqa: E731
    p = _run(f, jnp.zeros(3), 10)
    np.testing.assert_allclose(np.asarray(p), np.asarray(target), atol=1e-4)


def test_secant_steps_are_capped_and_expand_on_concave_stretches():
    f = lambda p: -jnp.exp(-((p - 10.0) ** 2) / 50.0)  # noqa: E731  (concave far from 10)
    opt = ij.tuning.secant(learning_rate=0.5, max_step=1.5)
    state, p, steps = opt.init(jnp.zeros(())), jnp.zeros(()), []
    for _ in range(12):
        u, state = opt.update(jax.grad(f)(p), state, p)
        steps.append(float(u))
        p = p + u
    assert all(abs(s) <= 1.5 + 1e-6 for s in steps) and steps[0] == pytest.approx(0.5)
    assert float(p) == pytest.approx(10.0, abs=1e-2)


def test_secant_bad_input():
    with pytest.raises(ValueError, match="must be > 0"):
        ij.tuning.secant(learning_rate=0.0)
    opt = ij.tuning.secant()
    with pytest.raises(ValueError, match="needs `params`"):
        opt.update(jnp.ones(2), opt.init(jnp.zeros(2)))
