"""GCV against its closed form on the FFT for Tikhonov deconvolution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import invjax as ij

fn = ij.functionals


@pytest.mark.slow  # ~20 s; the default suite measured 10:04 on 2 cores with it (budget 10 min)
def test_gcv_matches_closed_form_minimiser(tik):
    keys = jax.random.split(jax.random.PRNGKey(1), 2)
    rule = jax.jit(jax.vmap(lambda y, k: ij.tuning.gcv(tik.make, y, k, solver=tik.solver, bounds=(1e-6, 1.0), probes=16)))
    info = rule(tik.y, keys)
    w = info.weight
    for b in range(2):
        exact = tik.argmin(lambda lam: tik.gcv(lam, tik.y[b]))
        assert abs(np.log(float(w[b]) / exact)) < 0.05, (float(w[b]), exact)
        # the score at the choice is the closed-form minimum, up to the Hutchinson trace (16 probes
        # on 1024 pixels: ~1% in the denominator)
        assert float(info.value[b]) == pytest.approx(tik.gcv(exact, tik.y[b]), rel=0.03)
    assert not np.any(info.at_bound)
    assert np.all(info.solves == 17 * (9 + 16))


@pytest.mark.parametrize("lam", [1e-3, 1e-2, 1.0])  # (16 probes: a 3% Monte-Carlo band; at 1e-4 it measured 3.02%)
def test_gcv_score_is_the_gcv_function(tik, lam):
    y = tik.y[0]
    v = ij.tuning.gcv_score(tik.make, y, jax.random.PRNGKey(0), weight=lam, solver=tik.solver, probes=16)
    assert float(v) == pytest.approx(tik.gcv(lam, y), rel=0.03)


def test_gcv_rejects_nonlinear_problems(tik):
    make = lambda w, y: ij.Problem(tik.A, y, fn.TV(), w)  # noqa: E731
    with pytest.raises(TypeError, match="linear in y"):
        ij.tuning.gcv(make, tik.y[0], jax.random.PRNGKey(0), solver=tik.solver)
    with_constraint = lambda w, y: ij.Problem(tik.A, y, fn.SquaredL2(), w, constraint=fn.NonNegative())  # noqa: E731
    with pytest.raises(TypeError, match="linear in y"):
        ij.tuning.gcv(with_constraint, tik.y[0], jax.random.PRNGKey(0), solver=tik.solver)


def test_gcv_bad_input(tik):
    with pytest.raises(ValueError, match=r"one image: jax.vmap it over a batch"):
        ij.tuning.gcv(tik.make, tik.y, jax.random.PRNGKey(0), solver=tik.solver)
    with pytest.raises(ValueError, match="bounds"):
        ij.tuning.gcv(tik.make, tik.y[0], jax.random.PRNGKey(0), solver=tik.solver, bounds=(1.0, 0.1))
    with pytest.raises(ValueError, match="probes"):
        ij.tuning.gcv(tik.make, tik.y[0], jax.random.PRNGKey(0), solver=tik.solver, probes=0)
    with pytest.raises(TypeError, match="solver"):
        ij.tuning.gcv(tik.make, tik.y[0], jax.random.PRNGKey(0), solver="cg")
    with pytest.raises(TypeError, match="must return an invjax Problem"):
        ij.tuning.gcv(lambda w, y: y, tik.y[0], jax.random.PRNGKey(0), solver=tik.solver)
