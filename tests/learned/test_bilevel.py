"""Bilevel learning of a ridge regulariser and its weight through the solver's implicit
derivative (``ij.learned.reconstruction_loss``), against central differences in float64."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import invjax as ij
from invjax.learned import ConvexRidge
from tests.conftest import x64_enabled

N = 8


def _setup(dtype):
    with x64_enabled(False):
        m = ConvexRidge(key=jax.random.key(3), channels=(1, 2, 4), kernel_size=3, knots=7, strength=20.0)
        rng = np.random.default_rng(0)
        m = eqx.tree_at(lambda t: t.spline.raw_slopes, m, jnp.asarray(rng.uniform(0.1, 0.9, m.spline.raw_slopes.shape), jnp.float32))
    theta = jax.tree.map(lambda a: jnp.asarray(a, dtype), (m, jnp.log(jnp.asarray(0.02))))
    op = ij.operators.Convolution(ij.operators.gaussian_psf(3, 0.8, dtype=dtype), (N, N))
    clean = jnp.asarray(np.random.default_rng(1).uniform(0, 1, (2, N, N)), dtype)
    return theta, op, clean


def _make_problem(op):
    return lambda th, y: ij.Problem(op, y, th[0], jnp.exp(th[1]))


def test_bilevel_gradient_matches_central_differences(x64):
    """d loss / d (filters, spline slopes, strength, weight) through FISTA's implicit derivative."""
    theta, op, clean = _setup(jnp.float64)
    solver = ij.solvers.FISTA(max_iters=20000, tol=1e-13, diff="implicit")
    loss = ij.learned.reconstruction_loss(_make_problem(op), solver, op, noise=0.05)
    key = jax.random.key(5)
    f = eqx.filter_jit(lambda th: loss(th, clean, key))
    g = eqx.filter_grad(f)(theta)
    rng = np.random.default_rng(2)
    h = 1e-6
    paths = [lambda t: t[0].kernels[1], lambda t: t[0].spline.raw_slopes, lambda t: t[0].log_strength, lambda t: t[1]]
    for where in paths:
        d = jnp.asarray(rng.standard_normal(np.shape(where(theta))))
        shift = lambda c: eqx.tree_at(where, theta, where(theta) + c * d)  # noqa: E731
        fd = (float(f(shift(h))) - float(f(shift(-h)))) / (2 * h)
        np.testing.assert_allclose(float(jnp.vdot(where(g), d)), fd, rtol=2e-5, atol=1e-12)


@pytest.mark.slow  # ~10 s; the gradient itself is checked above, real training is benchmarks/bilevel_crr.py
def test_bilevel_training_lowers_the_held_out_reconstruction_error():
    """A few Adam steps of ij.learned.train with the bilevel loss lower the loss on images and
    noise it never saw (float32, the default solver settings)."""
    theta, op, clean = _setup(jnp.float32)
    solver = ij.solvers.FISTA(max_iters=300, tol=1e-5)
    loss = ij.learned.reconstruction_loss(_make_problem(op), solver, op, noise=0.05)
    images = np.random.default_rng(7).uniform(0, 1, (6, N, N)).astype(np.float32)
    images = np.asarray(jax.vmap(lambda x: ij.operators.Convolution(ij.operators.gaussian_psf(3, 1.0), (N, N))(x))(images))
    train, test = images[:4], jnp.asarray(images[4:])
    data = lambda key, step: jnp.asarray(train[np.asarray(jax.random.choice(key, 4, (2,), replace=False))])  # noqa: E731
    before = float(loss(theta, test, jax.random.key(99)))
    trained, hist = ij.learned.train(theta, loss, data, optax.adam(5e-2), 15, key=jax.random.key(0), progress=False)
    after = float(loss(trained, test, jax.random.key(99)))
    assert after < 0.9 * before, (before, after)
    assert hist.loss.shape == (15,)


def test_reconstruction_loss_checks_its_arguments():
    theta, op, clean = _setup(jnp.float32)
    with pytest.raises(ValueError, match="`loss` must be 'mse' or 'psnr'"):
        ij.learned.reconstruction_loss(_make_problem(op), ij.solvers.FISTA(), op, 0.1, loss="l1")
    with pytest.raises(ValueError, match="`noise` must be a finite float >= 0"):
        ij.learned.reconstruction_loss(_make_problem(op), ij.solvers.FISTA(), op, -0.1)
    loss = ij.learned.reconstruction_loss(_make_problem(op), ij.solvers.FISTA(), op, 0.1)
    with pytest.raises(ValueError, match=r"the batch must have shape \(B,\) \+ \(8, 8\)"):
        loss(theta, jnp.zeros((2, 4, 4)), jax.random.key(0))
