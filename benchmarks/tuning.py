"""Parameter selection against the grid oracle: print a markdown table, write benchmarks/results/tuning.json.

Problems (8 training and 8 held-out images each):

* ``deblur``: TV deblurring of scikit-image's ``camera``, cut into 16 tiles of 128^2 (a
  checkerboard of tiles for training, the other 8 held out), 9x9 Gaussian blur (sigma 2 px,
  circular), noise sigma 0.01; ADMM.
* ``ct``: TV sparse-view CT of random ellipses, 128^2, 30 angles over [0, pi), 5% noise (sigma
  5% of the root-mean-square clean sinogram value over the 16 images); FISTA with a
  20-iteration FGP prox of TV.
* ``tikhonov``: Tikhonov deconvolution of the deblur tiles (CG), where GCV applies and its
  minimiser is known in closed form by FFT.
* ``aniso``: TV denoising-deblurring of horizontally elongated rectangles with one weight per
  direction (``weight`` of shape ``(2, 1, 1)``) against the best single weight.

For each problem: the grid oracle on the held-out images (40 log-spaced weights, best mean PSNR;
and per image), then each method's chosen weight, held-out PSNR and gap to the oracle, and its
cost in lower-level solves and seconds (compilation excluded: every program is compiled before
it is timed). ``fit`` and the 40-point grid on the *training* images are the two supervised
selections; ``fit``'s cost to reach the 0.1 dB band is read from its history (the held-out PSNR
of each step's weight interpolated on the 40-point held-out curve).

Usage::

    python benchmarks/tuning.py                      # all problems, full size (~1.5 h on 2 cores: CT ~55 min)
    python benchmarks/tuning.py --problems deblur    # one problem (--out for another JSON file)
    python benchmarks/tuning.py --problems ct --extras  # CT with its training grid and SURE study (+~1 h)
    python benchmarks/tuning.py --quick              # 64^2, fewer steps (a smoke run)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import invjax as ij
import invjax.tuning  # noqa: F401  (ij.tuning)

fn = ij.functionals
RESULTS = Path(__file__).resolve().parent / "results" / "tuning.json"


# ---- problems -----------------------------------------------------------------------------------


def _tiles(image, n):
    k = image.shape[0] // n
    tiles = image[: k * n, : k * n].reshape(k, n, k, n).transpose(0, 2, 1, 3).reshape(k * k, n, n)
    checker = (np.add.outer(np.arange(k), np.arange(k)) % 2).ravel()
    return tiles[checker == 0], tiles[checker == 1]


def _parallel_beam():
    op = getattr(ij.operators, "ParallelBeam2D", None)
    if op is None:
        try:
            from invjax.operators.tomography import ParallelBeam2D as op
        except ImportError:
            return None
    return op


def deblur(quick=False):
    n = 64 if quick else 128
    cam = ij.phantoms.camera(4 * n)
    x_train, x_test = _tiles(cam, n)
    A = ij.operators.Convolution(ij.operators.gaussian_psf(9, 2.0), (n, n))
    sigma = 0.01
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    noisy = lambda key, x: jax.vmap(A)(x) + sigma * jax.random.normal(key, x.shape)  # noqa: E731
    reg = fn.TV(boundary="periodic")
    return dict(
        name="deblur",
        title=f"TV deblurring, camera tiles {n}^2, 9x9 Gaussian blur, sigma 0.01 (ADMM)",
        make=lambda w, y: ij.Problem(A, y, reg, w),
        # (adapt_iters: keep adapting the penalty across fit's warm starts)
        solver=ij.solvers.ADMM(max_iters=300, tol=1e-3, adjoint_tol=1e-2, adapt_iters=10**6),
        # SURE's *value* needs converged solves (at tol 1e-3 it read 13 % low in expectation:
        # the implicit divergence is that of the fixed point, not of the returned iterate)
        accurate_solver=ij.solvers.ADMM(max_iters=2000, tol=1e-4, adjoint_tol=1e-3),
        x_train=x_train, y_train=noisy(k1, x_train), x_test=x_test, y_test=noisy(k2, x_test),
        sigma_test=jnp.full((8,), sigma),
        grid=jnp.logspace(-5, -1, 40),
        init=1e-4,
        bounds=(1e-5, 1e-1),
        weighting=None,
        steps=10,
        optimizer=ij.tuning.secant(),
        loss="psnr",
    )


def ct(quick=False):
    ParallelBeam2D = _parallel_beam()
    if ParallelBeam2D is None:
        return None
    n = 64 if quick else 128
    A = ParallelBeam2D((n, n), np.linspace(0, np.pi, 30, endpoint=False))
    x = ij.phantoms.random_ellipses(jax.random.PRNGKey(1), n, 16)
    ax = jax.vmap(A)(x)
    # 5% noise: sigma is 5% of the root-mean-square clean sinogram value over the data set (one
    # level for every image, as a scanner would have)
    sigma = jnp.full((16,), 0.05 * jnp.sqrt(jnp.mean(ax**2)))
    y = ax + sigma[:, None, None] * jax.random.normal(jax.random.PRNGKey(2), ax.shape)
    reg = fn.TV(unroll=True, max_iters=20)
    return dict(
        name="ct",
        title=f"TV sparse-view CT, random ellipses {n}^2, 30 angles, 5% noise (FISTA)",
        make=lambda w, y: ij.Problem(A, y, reg, w),
        solver=ij.solvers.FISTA(max_iters=1000, tol=1e-4, adjoint_tol=0.1),
        accurate_solver=ij.solvers.FISTA(max_iters=3000, tol=1e-5, adjoint_tol=1e-2),
        x_train=x[:8], y_train=y[:8], x_test=x[8:], y_test=y[8:],
        sigma_test=sigma[8:],
        grid=jnp.logspace(np.log10(0.3), np.log10(300), 40),
        init=0.5,
        bounds=(0.1, 1e3),
        weighting=None,
        steps=10,
        optimizer=ij.tuning.secant(),
        loss="psnr",
        # a 40-point grid of these solves takes ~22 minutes on 2 cores: the training-set grid
        # (a baseline, not the oracle) and SURE's 32-draw accuracy study (run on ``deblur``)
        # are left out unless --extras
        train_grid=False,
        sure_accuracy=False,
    )


# ---- measurement helpers ----------------------------------------------------------------------


def _timed(f, *args):
    """Compile ``f`` for ``args`` (AOT), then time one run; returns (result, seconds)."""
    compiled = jax.jit(f).lower(*args).compile()
    start = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    return out, time.perf_counter() - start


def _psnr_batch(make, solver, x, y, w):
    """Held-out PSNR per image for per-image weights ``w`` (B,) (one vmapped solve)."""

    @jax.jit
    def run(x, y, w):
        return jax.vmap(lambda xi, yi, wi: ij.metrics.psnr(ij.solve(make(wi, yi), solver).x, xi, data_range=1.0))(x, y, w)

    return np.asarray(run(x, y, w))


def _interp_curve(grid, curve, w):
    return float(np.interp(np.log(w), np.log(np.asarray(grid)), np.asarray(curve)))


def _row(method, weight, psnr, gap, solves, seconds, note=""):
    return dict(method=method, weight=weight, psnr=psnr, gap=gap, solves=solves, seconds=seconds, note=note)


# ---- the comparison ---------------------------------------------------------------------------


def run_tv(P, log, extras=False):
    make, solver, grid = P["make"], P["solver"], P["grid"]
    xtr, ytr, xte, yte = P["x_train"], P["y_train"], P["x_test"], P["y_test"]
    B, G = xte.shape[0], grid.shape[0]
    rows = []

    # 40-point grid on the training images (compiles the grid program), then on the held-out ones
    g_train = None
    if P.get("train_grid", True) or extras:
        start = time.perf_counter()
        g_train = ij.tuning.grid(make, xtr, ytr, weights=grid, solver=solver, data_range=1.0)
        jax.block_until_ready(g_train.scores)
        log(f"  grid (train, with compilation) {time.perf_counter() - start:.1f}s")
    else:
        # compile the grid program on its own, so that the timed run below excludes compilation
        jax.jit(lambda x, y: ij.tuning.grid(make, x, y, weights=grid, solver=solver, data_range=1.0)).lower(xte, yte).compile()
    start = time.perf_counter()
    g_test = ij.tuning.grid(make, xte, yte, weights=grid, solver=solver, data_range=1.0)
    jax.block_until_ready(g_test.scores)
    grid_seconds = time.perf_counter() - start
    curve = np.asarray(jnp.mean(g_test.scores, axis=1))
    oracle_w, oracle_psnr = float(g_test.weight), float(g_test.score)
    per_oracle = np.asarray(g_test.per_image_score)
    grid_iters = int(np.sum(g_test.grid_iterations))
    log(f"  oracle {oracle_w:.3g}: {oracle_psnr:.2f} dB; grid {grid_seconds:.1f}s, {grid_iters} iterations")
    rows.append(_row("oracle (grid-40 on held-out)", oracle_w, oracle_psnr, 0.0, G * B, grid_seconds))
    if g_train is not None:
        w_gt = float(g_train.weight)
        psnr_gt = float(np.mean(_psnr_batch(make, solver, xte, yte, jnp.full((B,), w_gt))))
        rows.append(_row("grid-40 on training", w_gt, psnr_gt, oracle_psnr - psnr_gt, G * B, grid_seconds))

    # fit: compile with one step, then the timed run from the same start
    ij.tuning.fit(make, xtr, ytr, init=P["init"], solver=solver, optimizer=P["optimizer"], max_iters=1, loss=P["loss"], progress=False)
    start = time.perf_counter()
    res = ij.tuning.fit(make, xtr, ytr, init=P["init"], solver=solver, optimizer=P["optimizer"], max_iters=P["steps"], loss=P["loss"], progress=False)
    weight, hist = res.weight, res.history
    fit_seconds = time.perf_counter() - start
    w_fit = float(weight)
    psnr_fit = float(np.mean(_psnr_batch(make, solver, xte, yte, jnp.full((B,), w_fit))))
    step_psnr = [_interp_curve(grid, curve, w) for w in hist.weight]
    inside = [p >= oracle_psnr - 0.1 for p in step_psnr]
    # first step from which every later weight stays in the band
    k_band = next((k for k in range(len(inside)) if all(inside[k:])), None)
    band_seconds = float(np.sum(hist.seconds[:k_band])) if k_band is not None else None
    rows.append(
        _row(
            f"fit ({len(hist.loss)} steps)", w_fit, psnr_fit, oracle_psnr - psnr_fit, len(hist.loss) * B, fit_seconds,
            note=f"0.1 dB band after {k_band} steps = {None if k_band is None else k_band * B} gradient solves, "
            f"{band_seconds if band_seconds is None else round(band_seconds, 1)} s "
            f"({None if band_seconds is None else round(band_seconds / grid_seconds, 2)} of the grid's time); "
            f"lower-level iterations per solve {np.mean(hist.iterations):.0f} (grid {grid_iters / (G * B):.0f})",
        )
    )
    log(f"  fit {w_fit:.3g}: {psnr_fit:.2f} dB in {fit_seconds:.1f}s; band at step {k_band} ({band_seconds}s)")
    fit_record = dict(
        weights=[float(w) for w in hist.weight], loss=hist.loss.tolist(), seconds=hist.seconds.tolist(),
        iterations=hist.iterations.mean(axis=1).tolist(), converged=hist.converged.mean(axis=1).tolist(),
        test_psnr_interp=step_psnr, band_step=k_band, band_seconds=band_seconds,
    )

    # rules without ground truth, per image, each one jitted call over the 8 held-out images
    keys = jax.random.split(jax.random.PRNGKey(7), B)
    sig = P["sigma_test"]
    lo, hi = P["bounds"]

    def sure_fn(y, s, k):
        return jax.vmap(lambda yi, si, ki: ij.tuning.sure(make, yi, si, ki, solver=solver, bounds=(lo, hi), weighting=P["weighting"]))(y, s, k)

    def disc_fn(y, s):
        return jax.vmap(lambda yi, si: ij.tuning.discrepancy(make, yi, si, solver=solver, bounds=(lo, hi)))(y, s)

    lgrid = jnp.logspace(np.log10(lo), np.log10(hi), 25)

    def lcurve_fn(y):
        return jax.vmap(lambda yi: ij.tuning.lcurve(make, yi, solver=solver, weights=lgrid))(y)

    rule_records = {}
    for name, f, args in [
        ("sure" + ("" if P["weighting"] is None else " (weighted)"), sure_fn, (yte, sig, keys)),
        ("discrepancy", disc_fn, (yte, sig)),
        ("lcurve", lcurve_fn, (yte,)),
    ]:
        info, seconds = _timed(f, *args)
        w = info.weight
        p = _psnr_batch(make, solver, xte, yte, w)
        gaps = per_oracle - p
        solves = int(np.sum(info.solves))
        rows.append(
            _row(name, float(np.median(w)), float(np.mean(p)), float(np.mean(gaps)), solves, seconds,
                 note=f"per image: max gap {np.max(gaps):.2f} dB")
        )
        rule_records[name] = dict(weights=np.asarray(w).tolist(), psnr=p.tolist(), gaps=gaps.tolist(), solves=solves, seconds=seconds)
        log(f"  {name}: mean gap {np.mean(gaps):.2f} dB, max {np.max(gaps):.2f} dB, {seconds:.1f}s")

    # SURE's value against the true risk around each image's oracle weight
    if P.get("sure_accuracy", True) or extras:
        rule_records["sure_accuracy"] = _sure_accuracy(P, keys, g_test.per_image_weight)
        acc = rule_records["sure_accuracy"]
        log(f"  SURE / true risk - 1 around the optimum: per image (one draw) max {acc['max_rel_error']:.3f}; "
            f"in expectation ({acc['expectation']['draws']} draws) {np.round(acc['expectation']['rel_error'], 3)} "
            f"+- {np.round(acc['expectation']['stderr'], 3)}")
    return dict(
        title=P["title"], oracle_weight=oracle_w, oracle_psnr=oracle_psnr, per_image_oracle=per_oracle.tolist(),
        per_image_oracle_weight=np.asarray(g_test.per_image_weight).tolist(),
        grid=np.asarray(grid).tolist(), curve_test=curve.tolist(), curve_train=None if g_train is None else np.asarray(jnp.mean(g_train.scores, axis=1)).tolist(),
        grid_seconds=grid_seconds, rows=rows, fit=fit_record, rules=rule_records,
    )


def _sure_vs_risk(make, solver, W, x, y, s, k, w):
    """SURE at weight ``w`` and the true (weighted) measurement-domain risk of that solve."""
    est = ij.tuning.sure_risk(make, y, s, k, weight=w, solver=solver, weighting=W)
    problem = make(w, y)
    e = problem.op.mv(ij.solve(problem, solver).x - x)
    e = e if W is None else W(e)
    return est, jnp.mean(e**2)


def _sure_accuracy(P, keys, w_oracle, draws=32):
    """SURE against the true risk at 0.5x, 1x, 2x the oracle weight, with ``P["accurate_solver"]``.

    Two views. Per image (one noise draw each), the error is dominated by the weight-independent
    term ``(||n||^2 - m sigma^2) / m`` of SURE, whose standard deviation is ``sigma^2 sqrt(2 / m)``:
    an estimate of the *expected* risk cannot match one draw's error better than that. In
    expectation, for the first held-out image and ``draws`` fresh noise draws, the mean SURE is
    compared with the mean true risk (the quantity SURE estimates without bias).
    """
    make, solver, W = P["make"], P.get("accurate_solver", P["solver"]), P["weighting"]
    factors = jnp.asarray([0.5, 1.0, 2.0])
    one = jax.jit(lambda x, y, s, k, w: _sure_vs_risk(make, solver, W, x, y, s, k, w))
    est, true = jax.vmap(
        lambda x, y, s, k, w: jax.vmap(lambda f: one(x, y, s, k, f * w))(factors)
    )(P["x_test"], P["y_test"], P["sigma_test"], keys, w_oracle)
    rel = np.asarray(est / true - 1)
    sig = np.asarray(P["sigma_test"])
    m = int(np.prod(P["y_test"].shape[1:]))
    noise_floor = (sig**2 * np.sqrt(2.0 / m))[:, None] / np.asarray(true)
    # expectation over noise draws, first held-out image
    x0, s0 = P["x_test"][0], P["sigma_test"][0]
    op = make(w_oracle[0], P["y_test"][0]).op
    clean = op.mv(x0)
    noise = jax.random.normal(jax.random.PRNGKey(21), (draws,) + tuple(clean.shape), clean.dtype)
    ys = clean + s0 * noise
    dkeys = jax.random.split(jax.random.PRNGKey(22), draws)
    e_est, e_true = [], []
    for f in [0.5, 1.0, 2.0]:
        a, b = jax.lax.map(lambda yk: one(x0, yk[0], s0, yk[1], f * w_oracle[0]), (ys, dkeys))
        e_est.append(np.asarray(a))
        e_true.append(np.asarray(b))
    e_est, e_true = np.stack(e_est), np.stack(e_true)
    mean_rel = e_est.mean(axis=1) / e_true.mean(axis=1) - 1
    stderr = (e_est - e_true).std(axis=1, ddof=1) / np.sqrt(draws) / e_true.mean(axis=1)
    return dict(
        factors=[0.5, 1.0, 2.0], rel_error=rel.tolist(), max_rel_error=float(np.max(np.abs(rel))),
        mean_abs_rel_error=float(np.mean(np.abs(rel))),
        noise_floor_rel=noise_floor.tolist(),
        expectation=dict(image=0, draws=draws, rel_error=mean_rel.tolist(), stderr=stderr.tolist(),
                         max_rel_error=float(np.max(np.abs(mean_rel)))),
    )


# ---- tikhonov / gcv ------------------------------------------------------------------------------


def run_tikhonov(quick, log):
    n = 64 if quick else 128
    cam = ij.phantoms.camera(4 * n)
    _, x = _tiles(cam, n)
    A = ij.operators.Convolution(ij.operators.gaussian_psf(9, 2.0), (n, n))
    sigma = 0.01
    y = jax.vmap(A)(x) + sigma * jax.random.normal(jax.random.PRNGKey(3), x.shape)
    make = lambda w, y: ij.Problem(A, y, fn.SquaredL2(), w)  # noqa: E731
    solver = ij.solvers.CG(max_iters=500, tol=1e-6)
    grid = jnp.logspace(-5, 0, 40)
    g = ij.tuning.grid(make, x, y, weights=grid, solver=solver, data_range=1.0)
    per_oracle = np.asarray(g.per_image_score)
    keys = jax.random.split(jax.random.PRNGKey(5), 8)
    info, seconds = _timed(
        lambda y, k: jax.vmap(lambda yi, ki: ij.tuning.gcv(make, yi, ki, solver=solver, bounds=(1e-5, 1.0), probes=8))(y, k), y, keys
    )
    w = info.weight
    closed = np.array([_gcv_closed_form(A, yi) for yi in np.asarray(y)])
    p = _psnr_batch(make, solver, x, y, w)
    ratio = np.asarray(w) / closed
    log(f"  gcv / closed-form minimiser: {np.round(ratio, 3)}; gap to oracle {np.mean(per_oracle - p):.2f} dB")
    rows = [
        _row("oracle (grid-40, per image)", float(np.median(g.per_image_weight)), float(np.mean(per_oracle)), 0.0, 40 * 8, None),
        _row("gcv (8 probes)", float(np.median(w)), float(np.mean(p)), float(np.mean(per_oracle - p)), int(np.sum(info.solves)), seconds,
             note=f"weight / closed-form GCV minimiser in [{ratio.min():.3f}, {ratio.max():.3f}]"),
    ]
    return dict(title=f"Tikhonov deconvolution, camera tiles {n}^2 (CG)", rows=rows,
                gcv=dict(weights=np.asarray(w).tolist(), closed_form=closed.tolist(), ratio=ratio.tolist()))


def _gcv_closed_form(A, y):
    """GCV minimiser for Tikhonov deconvolution, in closed form on the FFT (numpy, float64)."""
    from scipy.optimize import minimize_scalar

    n = y.shape[0]
    psf_full = np.fft.irfft2(np.asarray(A.otf, np.complex128), s=(n, n))
    h2 = np.abs(np.fft.fft2(psf_full)) ** 2
    y2 = np.abs(np.fft.fft2(np.asarray(y, np.float64), norm="ortho")) ** 2
    m = y.size

    def V(t):
        f = h2 / (h2 + np.exp(t))
        return (np.sum((1 - f) ** 2 * y2) / m) / (np.sum(1 - f) / m) ** 2

    ts = np.linspace(np.log(1e-7), np.log(10.0), 400)
    i = int(np.argmin([V(t) for t in ts]))
    res = minimize_scalar(V, bounds=(ts[max(i - 1, 0)], ts[min(i + 1, len(ts) - 1)]), method="bounded", options=dict(xatol=1e-8))
    return float(np.exp(res.x))


# ---- anisotropic: a weight per direction ------------------------------------------------------------


def bars(key, n, batch, count=24):
    """Horizontally elongated rectangles (widths n/4..n, heights 2..6 px), values in [0, 1]."""
    k = jax.random.split(key, 5)
    shape = (batch, count)
    width = jax.random.uniform(k[0], shape, minval=n / 4, maxval=n)
    height = jax.random.uniform(k[1], shape, minval=2, maxval=6)
    left = jax.random.uniform(k[2], shape, minval=-n / 4, maxval=n)
    top = jax.random.uniform(k[3], shape, minval=0, maxval=n)
    level = jax.random.uniform(k[4], shape, minval=0.2, maxval=1.0)
    rows, cols = jnp.arange(n)[:, None], jnp.arange(n)[None, :]
    inside = (
        (rows[None, None] >= top[..., None, None]) & (rows[None, None] < (top + height)[..., None, None])
        & (cols[None, None] >= left[..., None, None]) & (cols[None, None] < (left + width)[..., None, None])
    )
    img = jnp.max(jnp.where(inside, level[..., None, None], 0.0), axis=1)
    return img


def aniso(quick=False):
    n = 64 if quick else 128
    x = bars(jax.random.PRNGKey(11), n, 16)
    A = ij.operators.Convolution(ij.operators.gaussian_psf(5, 1.0), (n, n))
    sigma = 0.05
    y = jax.vmap(A)(x) + sigma * jax.random.normal(jax.random.PRNGKey(12), x.shape)
    reg = fn.TV(boundary="periodic")
    return dict(
        make=lambda w, y: ij.Problem(A, y, reg, w),
        # a (2, 1, 1) weight keeps the regulariser circulant (ChannelScaled): ADMM's x-step is an FFT solve.
        # adjoint_failure="ignore": on these piecewise-constant bars the TV dual (ADMM's u) is not
        # unique, the implicit-derivative system is singular, and some solves stall above
        # 10 * adjoint_tol (up to a 0.1 relative residual, measured); the stalled part of the
        # right-hand side moves u along its solution set, not x, and the best iterate steers the
        # fit (the table). With jax.scipy's GMRES these solves gave NaN and the vector fit stopped
        # at its first step (24.83 dB); unrolled gradients through the CG x-step fitted
        # (0.03, 0.03), 1.2 dB below the best scalar (both measured)
        solver=ij.solvers.ADMM(max_iters=300, tol=1e-3, adjoint_tol=1e-2, adapt_iters=10**6,
                               adjoint_failure="ignore"),
        x_train=x[:8], y_train=y[:8], x_test=x[8:], y_test=y[8:],
        grid=jnp.logspace(-3, 0, 40), init=0.03, steps=15,
        title=f"TV, horizontal bars {n}^2, 5x5 blur, sigma 0.05: a weight per direction (ADMM)",
    )


def run_aniso(quick, log):
    P = aniso(quick)
    make, solver = P["make"], P["solver"]
    B = 8
    g = ij.tuning.grid(make, P["x_test"], P["y_test"], weights=P["grid"], solver=solver, data_range=1.0)
    start = time.perf_counter()
    res = ij.tuning.fit(make, P["x_train"], P["y_train"], init=P["init"], solver=solver, max_iters=P["steps"], loss="psnr", progress=False)
    w_s, h_s = res.weight, res.history
    t_s = time.perf_counter() - start
    start = time.perf_counter()
    init_v = jnp.full((2, 1, 1), P["init"])
    res = ij.tuning.fit(make, P["x_train"], P["y_train"], init=init_v, solver=solver, max_iters=P["steps"], loss="psnr", progress=False)
    w_v, h_v = res.weight, res.history
    t_v = time.perf_counter() - start
    p_s = float(np.mean(_psnr_batch(make, solver, P["x_test"], P["y_test"], jnp.full((B,), w_s))))
    p_v = float(np.mean(_psnr_batch(make, solver, P["x_test"], P["y_test"], jnp.broadcast_to(w_v, (B, 2, 1, 1)))))
    oracle = float(g.score)
    log(f"  scalar oracle {float(g.weight):.3g}: {oracle:.2f} dB; fit scalar {float(w_s):.3g}: {p_s:.2f}; "
        f"fit vector {np.ravel(w_v)}: {p_v:.2f}")
    rows = [
        _row("best single weight (grid-40 on held-out)", float(g.weight), oracle, 0.0, 40 * B, None),
        _row("fit, one weight", float(w_s), p_s, oracle - p_s, len(h_s.loss) * B, t_s),
        _row("fit, (vertical, horizontal) weights", [float(v) for v in np.ravel(w_v)], p_v, oracle - p_v, len(h_v.loss) * B, t_v,
             note="beats the best single weight" if p_v > oracle else "does not beat the best single weight"),
    ]
    return dict(title=P["title"], rows=rows)


# ---- output -----------------------------------------------------------------------------------------


def _fmt_weight(w):
    if isinstance(w, (list, tuple)):
        return "(" + ", ".join(f"{v:.3g}" for v in w) + ")"
    return f"{w:.3g}"


def markdown(results):
    lines = []
    for key, res in results.items():
        lines.append(f"**{res['title']}**")
        lines.append("")
        lines.append("| method | weight | held-out PSNR (dB) | gap to oracle (dB) | lower-level solves | seconds | notes |")
        lines.append("|---|---|---|---|---|---|---|")
        for r in res["rows"]:
            secs = "" if r["seconds"] is None else f"{r['seconds']:.1f}"
            lines.append(
                f"| {r['method']} | {_fmt_weight(r['weight'])} | {r['psnr']:.2f} | {r['gap']:+.2f} | {r['solves']} | {secs} | {r['note']} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", nargs="+", default=["deblur", "ct", "tikhonov", "aniso"],
                        choices=["deblur", "ct", "tikhonov", "aniso"])
    parser.add_argument("--quick", action="store_true", help="64^2 images, fewer steps")
    parser.add_argument("--extras", action="store_true",
                        help="also the training-set grid and SURE's accuracy study where a problem leaves them out (CT)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    meta = dict(
        jax=jax.__version__, backend=jax.default_backend(), devices=[str(d) for d in jax.devices()],
        machine=platform.machine(), processor=platform.processor(), cpus=os.cpu_count(), quick=args.quick,
        time=time.strftime("%Y-%m-%d %H:%M:%S"), load_start=os.getloadavg(),
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    out = args.out if not args.quick else args.out.with_name(args.out.stem + "_quick.json")

    def write(results):
        # after every problem, so that an interrupted run keeps what it measured
        table = markdown(results)
        meta.update(problems_done=list(results), load_now=os.getloadavg())
        out.write_text(json.dumps(dict(meta=meta, results=results, table=table), indent=1, default=float))
        return table

    results = {}
    for name in args.problems:
        log(f"{name}:")
        start = time.perf_counter()
        if name == "deblur":
            results[name] = run_tv(deblur(args.quick), log, args.extras)
        elif name == "ct":
            P = ct(args.quick)
            if P is None:
                log("  skipped: ParallelBeam2D is not available")
                continue
            results[name] = run_tv(P, log, args.extras)
        elif name == "tikhonov":
            results[name] = run_tikhonov(args.quick, log)
        else:
            results[name] = run_aniso(args.quick, log)
        results[name]["wall_s"] = time.perf_counter() - start
        write(results)
        log(f"  wrote {out}")
    print(write(results))


if __name__ == "__main__":
    main()
