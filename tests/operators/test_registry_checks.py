"""Every registered operator through the same checks: adjoint, jit, vmap, grad, dtypes, shapes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import invjax as ij
from tests.registry import OPERATORS

NAMES = sorted(OPERATORS)


def _random_input(rng, op, dtype=None):
    dtype = op.dtype if dtype is None else dtype
    x = rng.standard_normal(op.in_shape)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        x = x + 1j * rng.standard_normal(op.in_shape)
    return jnp.asarray(x, dtype)


@pytest.mark.parametrize("name", NAMES)
def test_adjoint_float32(name, rng):
    op = OPERATORS[name](rng)
    assert op.dtype in (jnp.float32, jnp.complex64)
    assert float(ij.operators.check_adjoint(op, jax.random.PRNGKey(1))) < 1e-5


@pytest.mark.parametrize("name", NAMES)
def test_adjoint_and_dtype_float64(name, rng, x64):
    op = OPERATORS[name](rng)
    assert op.dtype in (jnp.float64, jnp.complex128)
    x = _random_input(rng, op)
    y = op(x)
    assert y.dtype == op.out_dtype
    assert op.T(y).dtype == op.dtype
    assert float(ij.operators.check_adjoint(op, jax.random.PRNGKey(2))) < 1e-12


@pytest.mark.parametrize("name", NAMES)
def test_matches_dense_matrix_transpose(name, rng):
    """The adjoint applied to unit vectors equals the conjugate transpose of the forward matrix."""
    op = OPERATORS[name](rng)
    A = np.asarray(op.as_matrix())
    At = np.asarray(op.T.as_matrix())
    np.testing.assert_allclose(At, A.conj().T, atol=1e-5)
    # norm() by power iteration agrees with the largest singular value
    assert float(op.norm(iters=300)) == pytest.approx(np.linalg.norm(A, 2), rel=1e-3)


@pytest.mark.parametrize("name", NAMES)
def test_jit_and_vmap_batch_of_8(name, rng):
    op = OPERATORS[name](rng)
    xs = jnp.stack([_random_input(rng, op) for _ in range(8)])
    eager = jnp.stack([op(x) for x in xs])
    batched = jax.jit(jax.vmap(op))(xs)
    np.testing.assert_allclose(batched, eager, rtol=1e-5, atol=1e-5)
    ys = jnp.stack([_random_input(rng, op.T) for _ in range(8)])
    np.testing.assert_allclose(
        jax.jit(jax.vmap(op.T))(ys), jnp.stack([op.T(y) for y in ys]), rtol=1e-5, atol=1e-5
    )
    # the operator itself is a pytree argument of a jitted function
    np.testing.assert_allclose(jax.jit(lambda A, x: A(x))(op, xs[0]), eager[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_grad_matches_finite_difference(name, rng, x64):
    op = OPERATORS[name](rng)
    x = _random_input(rng, op)
    d = _random_input(rng, op)
    target = op(_random_input(rng, op))

    def loss(x):
        return 0.5 * jnp.sum(jnp.abs(op(x) - target) ** 2)

    g = jax.grad(loss)(x)
    eps = 1e-6
    fd = (loss(x + eps * d) - loss(x - eps * d)) / (2 * eps)
    # JAX's gradient for complex inputs is conj of the Wirtinger derivative convention: Re<g, d>
    directional = jnp.real(jnp.vdot(jnp.conj(g), d)) if jnp.iscomplexobj(g) else jnp.vdot(g, d)
    assert float(directional) == pytest.approx(float(fd), rel=1e-6)
    # gradient of the least-squares loss is A^H (A x - b)
    expected = op.T(op(x) - target)
    np.testing.assert_allclose(jnp.conj(g) if jnp.iscomplexobj(g) else g, expected, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name", NAMES)
def test_wrong_shape_raises_clear_error(name, rng):
    op = OPERATORS[name](rng)
    bad = tuple(s + 1 for s in op.in_shape)
    # (an adjoint A.T names its input after A's output, `y`)
    with pytest.raises(ValueError, match=r"`[xy]` must have shape .*got"):
        op(jnp.zeros(bad, op.dtype))
    with pytest.raises(ValueError, match=r"`[xy]` must have shape .*got"):
        op.T(jnp.zeros(tuple(s + 1 for s in op.out_shape), op.out_dtype))
    with pytest.raises(ValueError, match="jax.vmap"):
        op(jnp.zeros((2,) + tuple(op.in_shape), op.dtype))
