"""Grid oracle against a direct loop of solves; the L-curve corner against its closed form."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import invjax as ij


def test_grid_oracle_matches_direct_solves(tik):
    weights = jnp.logspace(-4, 1, 11)
    res = ij.tuning.grid(tik.make, tik.x, tik.y, weights=weights, solver=tik.solver, data_range=1.0, chunk=4)
    assert res.scores.shape == (11, 2) and res.grid_iterations.shape == (11, 2) and res.grid_converged.shape == (11, 2)
    # independent oracle: the closed-form reconstruction's PSNR for every weight and image
    scores = np.array([[10 * np.log10(1.0 / np.mean((tik.xhat(float(w), y) - np.asarray(x)) ** 2))
                        for x, y in zip(tik.x, tik.y)] for w in weights])
    np.testing.assert_allclose(np.asarray(res.scores), scores, atol=0.05)
    assert float(res.weight) == float(weights[np.argmax(scores.mean(axis=1))])
    np.testing.assert_array_equal(np.asarray(res.per_image_weight), np.asarray(weights)[np.argmax(scores, axis=0)])
    assert float(res.score) == pytest.approx(scores.mean(axis=1).max(), abs=0.05)
    # what it saw and the reconstructions at the oracle weight, for every image
    np.testing.assert_allclose(np.asarray(res.values), scores.mean(axis=1), atol=0.05)
    assert res.x.shape == tik.x.shape and bool(res.converged) and np.all(np.asarray(res.weights_converged))
    for b in range(2):
        np.testing.assert_allclose(np.asarray(res.x[b]), tik.xhat(float(res.weight), tik.y[b]), atol=2e-3)


def test_grid_custom_metric_and_vector_weights(tik):
    weights = jnp.logspace(-3, -1, 3)[:, None] * jnp.ones((3, 2))  # (G, 2): any weight shape
    make = lambda w, y: tik.make(w[0], y)  # noqa: E731
    res = ij.tuning.grid(make, tik.x, tik.y, weights=weights, solver=tik.solver, metric=lambda x, ref: -jnp.mean((x - ref) ** 2))
    assert res.weight.shape == (2,) and res.per_image_weight.shape == (2, 2)
    assert np.all(np.asarray(res.scores) < 0)


def test_grid_bad_input(tik):
    w = jnp.logspace(-3, -1, 3)
    with pytest.raises(ValueError, match="same number of images, got 2 and 1"):
        ij.tuning.grid(tik.make, tik.x, tik.y[:1], weights=w, solver=tik.solver)
    with pytest.raises(ValueError, match=r"`x_true` must have shape \(B,\)"):
        ij.tuning.grid(tik.make, tik.x[0], tik.y, weights=w, solver=tik.solver)
    with pytest.raises(ValueError, match="leading grid axis"):
        ij.tuning.grid(tik.make, tik.x, tik.y, weights=0.1, solver=tik.solver)
    with pytest.raises(TypeError, match="`metric`"):
        ij.tuning.grid(tik.make, tik.x, tik.y, weights=w, solver=tik.solver, metric="psnr")


def test_lcurve_corner_matches_closed_form(tik):
    weights = jnp.logspace(-5, 1, 31)
    y = tik.y[0]
    info = ij.tuning.lcurve(tik.make, y, solver=tik.solver, weights=weights)
    w = info.weight
    # the same corner search on the closed-form curve
    t = np.log(np.asarray(weights, np.float64))
    rho = np.log([tik.residual2(np.exp(s), y) for s in t])
    eta = np.log([0.5 * np.sum(tik.xhat(np.exp(s), y) ** 2) for s in t])
    d_rho, d_eta = np.gradient(rho, t), np.gradient(eta, t)
    kappa = (d_rho * np.gradient(d_eta, t) - np.gradient(d_rho, t) * d_eta) / (d_rho**2 + d_eta**2) ** 1.5
    corner = np.exp(t[2 + np.argmax(kappa[2:-2])])
    assert abs(np.log(float(w) / corner)) <= (t[1] - t[0]), (float(w), corner)
    assert not bool(info.at_bound) and int(info.solves) == 31
    assert info.values.shape == (31,) and float(info.value) == float(jnp.max(info.values[2:-2]))
    # the reconstruction at the grid weight nearest the corner
    near = int(np.argmin(np.abs(t - np.log(float(w)))))
    np.testing.assert_allclose(np.asarray(info.x), tik.xhat(float(weights[near]), y), atol=2e-3)
    # vmappable over a batch
    ws = jax.vmap(lambda y: ij.tuning.lcurve(tik.make, y, solver=tik.solver, weights=weights).weight)(tik.y)
    assert float(ws[0]) == pytest.approx(float(w), rel=1e-3)


def test_lcurve_bad_input(tik):
    with pytest.raises(ValueError, match="at least 5"):
        ij.tuning.lcurve(tik.make, tik.y[0], solver=tik.solver, weights=jnp.logspace(-3, 0, 4))
    no_reg = lambda w, y: ij.Problem(tik.A, y, None, w)  # noqa: E731
    with pytest.raises(TypeError, match="no regulariser"):
        ij.tuning.lcurve(no_reg, tik.y[0], solver=tik.solver, weights=jnp.logspace(-3, 0, 9))
