"""Implicit weight gradients at each solver's DEFAULT settings (float32) against a float64
reference: the float64 implicit gradient at a point solved to tol 1e-10, itself checked against
float64 central differences (issue 20, item 3; the 256² rows are in
benchmarks/results/derivatives_defaults.json)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import invjax as ij
from tests.conftest import x64_enabled


def _deblur(dtype, n=64):
    """64² Shepp-Logan, 9x9 Gaussian blur (sigma 2 px), noise 0.01, periodic TV, weight 5e-4
    (benchmarks/derivatives.py's ``deblur`` at its quick size)."""
    rng = np.random.default_rng(0)
    x = np.asarray(ij.phantoms.shepp_logan(n), np.float32)
    A32 = ij.operators.Convolution(ij.operators.gaussian_psf(9, 2.0, dtype=jnp.float32), (n, n))
    y = np.asarray(A32(jnp.asarray(x)), np.float32) + np.float32(0.01) * rng.standard_normal((n, n)).astype(np.float32)
    A = ij.operators.Convolution(ij.operators.gaussian_psf(9, 2.0, dtype=dtype), (n, n))
    tv = ij.functionals.TV(boundary="periodic")
    return (lambda w: ij.Problem(A, jnp.asarray(y, dtype), tv, w)), jnp.asarray(x, dtype), 5e-4


def _inpaint(dtype, n=64):
    """The README's TV inpainting at 64²: camera, half the pixels, noise 0.02, default TV()."""
    x = ij.phantoms.camera(n).astype(jnp.float32)
    A = ij.operators.Mask(jax.random.bernoulli(jax.random.key(1), 0.5, x.shape).astype(dtype))
    y = A(ij.noise.gaussian(jax.random.key(0), x, 0.02).astype(dtype))
    return (lambda w: ij.Problem(A, y, ij.functionals.TV(), w)), x.astype(dtype), 5e-3


def _grad(make, x, w, solver):
    return jax.jit(jax.grad(lambda w: jnp.mean((ij.solve(make(w), solver).x - x) ** 2)))(w)


def _reference(case):
    with x64_enabled():
        make, x, w = case(jnp.float64)
        solver = ij.solvers.ADMM(max_iters=20000, tol=1e-10, adapt_iters=10**6)
        g = float(_grad(make, x, jnp.float64(w), solver))
        f = jax.jit(lambda w: jnp.mean((ij.solve(make(w), solver).x - x) ** 2))
        h = 1e-4 * w
        cd = (float(f(w + h)) - float(f(w - h))) / (2 * h)
    return g, cd


@pytest.fixture(scope="module")
def deblur_reference():
    return _reference(_deblur)


# ADMM in the default suite; PDHG and FISTA (each another compiled float32 derivative) slow
@pytest.mark.parametrize("solver", ["ADMM", pytest.param("PDHG", marks=pytest.mark.slow),
                                    pytest.param("FISTA", marks=pytest.mark.slow)])
def test_weight_gradient_at_defaults_within_2_percent_on_deblurring(solver, deblur_reference):
    g64, cd = deblur_reference
    assert abs(g64 - cd) <= 2e-3 * abs(cd), (g64, cd)  # the reference is one
    make, x, w = _deblur(jnp.float32)
    g = float(_grad(make, x, jnp.float32(w), getattr(ij.solvers, solver)()))
    # measured: ADMM 3.2e-3, PDHG 3.0e-3, FISTA 4.5e-3
    assert abs(g - g64) <= 2e-2 * abs(g64), (solver, g, g64)


def _crr(dtype, n=32):
    """The brief's learned-regularizer case at 32²: camera, 9x9 Gaussian blur (sigma 2 px), noise
    0.01, the shipped CRR-NN as the regularizer, weight 5e-4 (benchmarks/derivatives.py's ``crr``)."""
    x = ij.phantoms.camera(n).astype(jnp.float32)
    psf = ij.operators.gaussian_psf(9, 2.0, dtype=jnp.float32)
    y = ij.operators.Convolution(psf, (n, n))(x) + 0.01 * jax.random.normal(jax.random.key(0), x.shape, jnp.float32)
    A = ij.operators.Convolution(psf.astype(dtype), (n, n))
    crr = ij.learned.pretrained("crr-nn")
    crr = jax.tree_util.tree_map(lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, crr)
    return (lambda w: ij.Problem(A, y.astype(dtype), crr, w)), x.astype(dtype), 5e-4


def test_weight_gradient_at_defaults_within_2_percent_through_a_learned_regularizer():
    """FISTA() at its defaults on CRR-NN deblurring: the weight gradient of the MSE within 2 % of
    float64 central differences of converged solves. Before the driver's block-change stopping
    rule FISTA stopped after 60 iterations on its gradient-mapping step alone (converged=True)
    and the gradient was 80 % off (0.28 vs 1.385; the issue's 256² case had the wrong sign);
    measured now: 250 iterations, 0.4 %."""
    with x64_enabled():
        make, x, w = _crr(jnp.float64)
        solver = ij.solvers.FISTA(max_iters=20000, tol=1e-10)
        f = jax.jit(lambda w: jnp.mean((ij.solve(make(w), solver).x - x) ** 2))
        h = 1e-4 * w
        cd = (float(f(w + h)) - float(f(w - h))) / (2 * h)
    make, x, w = _crr(jnp.float32)

    def loss(w, solver):
        sol = ij.solve(make(w), solver)
        return jnp.mean((sol.x - x) ** 2), sol.stats

    g, stats = jax.jit(jax.grad(loss, has_aux=True), static_argnums=1)(jnp.float32(w), ij.solvers.FISTA())
    assert bool(stats.converged)
    assert abs(float(g) - cd) <= 2e-2 * abs(cd), (float(g), cd, int(stats.iterations))
    # the test tells the two apart: stopped where the old rule stopped, the gradient is far off
    g60, _ = jax.jit(jax.grad(loss, has_aux=True), static_argnums=1)(jnp.float32(w), ij.solvers.FISTA(max_iters=60, tol=0))
    assert abs(float(g60) - cd) > 0.5 * abs(cd), (float(g60), cd)


@pytest.mark.slow  # the float64 PDHG reference: ~90 000 iterations (45 s)
@pytest.mark.xfail(strict=True, reason=(
    "known failure (issue 20 item 3, not fixed): at PDHG's default tol 1e-4 the implicit derivative's CG on the "
    "manifold identified at the loose point does not converge (relative residual ~1e2: the default policy raises); "
    "with failure='ignore' the gradient is -1.3e-2 against the float64 -1.33e-3 (rel. error 9, "
    "benchmarks/results/derivatives_defaults.json); PDHG(tol=1e-5) gives 3.4e-2"))
def test_weight_gradient_at_defaults_within_2_percent_on_tv_inpainting():
    with x64_enabled():
        make, x, w = _inpaint(jnp.float64)
        solver = ij.solvers.PDHG(max_iters=200000, tol=1e-10)
        g64 = float(_grad(make, x, jnp.float64(w), solver))
    make, x, w = _inpaint(jnp.float32)
    g = float(_grad(make, x, jnp.float32(w), ij.solvers.PDHG(adjoint=ij.solvers.ImplicitAdjoint(failure="ignore"))))
    assert abs(g - g64) <= 2e-2 * abs(g64), (g, g64)
