"""Derivatives through the solvers: cost against the forward solve, accuracy, memory, batches.

Problems (float32 unless noted; every number from one run of this script):

* ``deblur``: the TV deconvolution of ``tv_deconvolution.py`` (256² Shepp-Logan, 9x9 Gaussian
  blur sigma = 2 px, noise 0.01, periodic isotropic TV, weight 5e-4), solvers ADMM, PDHG, FISTA;
* ``ct``: 128² Shepp-Logan, parallel beam with 30 angles, 5 % noise, the default ``TV()``
  (Neumann), weight 3, solvers PDHG, FISTA.

First each solver with its defaults (does the default ``tol`` get reached within the default
``max_iters``?); then for each solver and ``tol``:

* the warm forward solve (median of repeats), the implicit gradient ``d MSE / d weight``
  (value and gradient, i.e. the forward solve included), and a forward-mode derivative with
  respect to the data (``jax.jvp`` in the direction of the data itself, ``d/dt MSE(x((1+t)y))``;
  a JVP in the data is what SURE computes): times and their ratio to the forward solve;
* accuracy: against central differences of float64 solves converged much further (ADMM and
  FISTA at ``tol`` 1e-10, at most 6000 iterations), in the weight and in the data
  direction. The difference quotient of a non-smooth loss depends on its step (the active set
  moves); two relative steps are reported, and the error is taken against the smaller;
* the unrolled gradient beside it (``diff="unroll"`` with ``max_iters`` the forward solve's
  iteration count), and the compiled program's temporary memory for ``max_iters`` 100, 400, 1600
  (implicit: flat; unrolled: grows);
* ``--accuracy`` (alone): the implicit gradient's error against the solve's ``tol`` in float64
  and float32 (deblur, ADMM), the error of the derivative image ``dx/dweight`` itself, and how
  much the MSE gradient cancels near the oracle weight (which multiplies the relative error);
* ``--defaults-accuracy deblur:256,crr:256,inpaint:128``: the weight gradient at each solver's
  DEFAULT settings (float32) against float64 central differences of solves to ``tol`` 1e-10
  (issue 20 item 3): ``deblur`` with ``ADMM()``, TV inpainting of camera (the README's case) with
  ``PDHG()``, camera deblurring with the shipped CRR-NN and ``FISTA()`` (:func:`default_case`);
  writes ``derivatives_defaults.json``;
* ``--batch``: a ``vmap`` of 8 problems with different weights against a single solve, per image,
  for every solver (CG and Landweber on Tikhonov / Huber deblurring).

Usage::

    python benchmarks/derivatives.py                 # everything (~30 min on 2 cores)
    python benchmarks/derivatives.py --quick         # 64² / 32² problems, a smoke test
    python benchmarks/derivatives.py --only deblur --solvers ADMM
    python benchmarks/derivatives.py --accuracy --output benchmarks/results/derivatives_accuracy.json
    python benchmarks/derivatives.py --defaults-accuracy deblur:64,inpaint:64,crr:64,deblur:256,crr:256

Writes ``benchmarks/results/derivatives.json`` (``--quick``: ``derivatives_quick.json``) and
prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from tv_deconvolution import _invjax_fingerprint, _load, _machine, _stats  # noqa: E402

RESULTS = HERE / "results"


def _log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def problem(name, quick, dtype, prox_tol=None):
    """``(make(weight, data) -> Problem, x_true, y, weight)`` in ``dtype``; ``prox_tol``: the
    accuracy of TV's own prox (FISTA's inner loop; default TV()'s 1e-4, which bounds how far
    FISTA's residual can fall: it plateaus near 1e-5).

    The data are made in float32 with numpy's generator, so the float32 and float64 rows (and
    the float64 reference) solve the same problem whether or not ``jax_enable_x64`` is on.
    """
    import jax.numpy as jnp

    import invjax as ij

    rng = np.random.default_rng(0)
    if name == "deblur":
        n = 64 if quick else 256
        x = np.asarray(ij.phantoms.shepp_logan(n), np.float32)
        A32 = ij.operators.Convolution(ij.operators.gaussian_psf(9, 2.0, dtype=jnp.float32), (n, n))
        clean = np.asarray(A32(jnp.asarray(x)), np.float32)
        y = clean + np.float32(0.01) * rng.standard_normal(clean.shape).astype(np.float32)
        A = ij.operators.Convolution(ij.operators.gaussian_psf(9, 2.0, dtype=dtype), (n, n))
        tv = ij.functionals.TV(boundary="periodic", **({} if prox_tol is None else {"tol": prox_tol}))
        return (lambda w, d: ij.Problem(A, d, tv, w)), jnp.asarray(x, dtype), jnp.asarray(y, dtype), 5e-4
    n = 32 if quick else 128
    x = np.asarray(ij.phantoms.shepp_logan(n), np.float32)
    A = ij.operators.ParallelBeam2D((n, n), np.linspace(0, np.pi, 30, endpoint=False))
    clean = np.asarray(A(jnp.asarray(x)), np.float32)
    y = clean + np.float32(0.05 * clean.std()) * rng.standard_normal(clean.shape).astype(np.float32)
    tv = ij.functionals.TV(**({} if prox_tol is None else {"tol": prox_tol}))
    return (lambda w, d: ij.Problem(A, d, tv, w)), jnp.asarray(x, dtype), jnp.asarray(y, dtype), 3.0


SOLVERS = {"deblur": ("ADMM", "PDHG", "FISTA"), "ct": ("PDHG", "FISTA")}
# the float64 reference: the fastest solver of each problem, converged far beyond the rows
# (float64 ADMM plateaus near 1e-10 once its penalty stops adapting: keep adapting; the caps
# bound the reference's time, and its difference quotients at two steps show its accuracy)
REFERENCE_SOLVER = {"deblur": lambda s: s.ADMM(max_iters=6000, tol=1e-10, adapt_iters=10**6),
                    "ct": lambda s: s.FISTA(max_iters=6000, tol=1e-10)}
# relative steps of the central differences; errors are reported against the smallest
REFERENCE_STEPS = (1e-3, 1e-4)


def _timed(fn, *args, repeats=3):
    import jax

    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return out, first, _stats(times)


def reference(name, quick):
    """float64 central differences of converged solves (weight and data direction)."""
    import jax
    import jax.numpy as jnp

    import invjax as ij

    jax.config.update("jax_enable_x64", True)
    try:
        make, x, y, w = problem(name, quick, jnp.float64, prox_tol=1e-12)
        direction = y
        solver = REFERENCE_SOLVER[name](ij.solvers)

        @jax.jit
        def loss(w, d):
            sol = ij.solve(make(w, d), solver)
            return jnp.mean((sol.x - x) ** 2), sol.stats.iterations, sol.stats.converged

        base = loss(w, y)
        out = {"solver": repr(solver) + ", float64", "iterations": int(base[1]), "converged": bool(base[2]),
               "loss": float(base[0]), "weight": {}, "data": {}}
        for h in REFERENCE_STEPS:
            lp, lm = loss(w * (1 + h), y), loss(w * (1 - h), y)
            out["weight"][f"{h:g}"] = (float(lp[0]) - float(lm[0])) / (2 * h * w)
            dp, dm = loss(w, y + h * direction), loss(w, y - h * direction)
            out["data"][f"{h:g}"] = (float(dp[0]) - float(dm[0])) / (2 * h)
        return out
    finally:
        jax.config.update("jax_enable_x64", False)


def measure(name, solver_name, tol, quick, repeats, x64=False):
    import jax
    import jax.numpy as jnp

    import invjax as ij

    jax.config.update("jax_enable_x64", x64)
    try:
        dtype = jnp.float64 if x64 else jnp.float32
        # FISTA's float64 rows need TV's prox more accurate than its default (see problem())
        make, x, y, w = problem(name, quick, dtype, prox_tol=1e-9 if (x64 and solver_name == "FISTA") else None)
        w = jnp.asarray(w, dtype)
        direction = y
        cls = getattr(ij.solvers, solver_name)
        solver = cls(max_iters=10000, tol=tol)
        load = _load()

        @jax.jit
        def forward(w, d):
            sol = ij.solve(make(w, d), solver)
            return sol.x, sol.stats.iterations, sol.stats.converged, sol.stats.inner_iterations

        def loss(w, d, s=solver):
            return jnp.mean((ij.solve(make(w, d), s).x - x) ** 2)

        grad_w = jax.jit(jax.value_and_grad(loss))
        jvp_y = jax.jit(lambda w, d: jax.jvp(lambda v: loss(w, v), (d,), (direction,)))
        (xs, its, conv, inner), f_first, f_warm = _timed(forward, w, y, repeats=repeats)
        (value, g), g_first, g_warm = _timed(grad_w, w, y, repeats=repeats)
        (_, t), j_first, j_warm = _timed(jvp_y, w, y, repeats=repeats)
        row = {"problem": name, "solver": solver_name, "dtype": "float64" if x64 else "float32", "tol": tol,
               "iterations": int(its), "converged": bool(conv), "inner_iterations": int(inner),
               "psnr": float(ij.metrics.psnr(xs, x)), "load": load,
               "forward": {"first_s": f_first, "warm": f_warm},
               "grad_weight": {"value": float(g), "first_s": g_first, "warm": g_warm},
               "jvp_data": {"value": float(t), "first_s": j_first, "warm": j_warm}}
        fw = f_warm["median_s"]
        row["grad_over_solve"] = g_warm["median_s"] / fw
        row["jvp_over_solve"] = j_warm["median_s"] / fw
        # unrolled beside it, over as many iterations as the forward solve took
        unrolled = cls(max_iters=max(int(its), 1), tol=tol, diff="unroll")
        grad_u = jax.jit(jax.value_and_grad(lambda w, d: loss(w, d, unrolled)))
        (_, gu), u_first, u_warm = _timed(grad_u, w, y, repeats=max(1, repeats - 1))
        row["grad_weight_unrolled"] = {"value": float(gu), "first_s": u_first, "warm": u_warm,
                                       "over_solve": u_warm["median_s"] / fw}
        return row
    finally:
        jax.config.update("jax_enable_x64", False)


def defaults(name, quick, repeats):
    """Each solver with its default settings (``max_iters``, ``tol``) in float32: does it stop
    converged, after how many iterations, in what time."""
    import jax
    import jax.numpy as jnp

    import invjax as ij

    make, x, y, w = problem(name, quick, jnp.float32)
    rows = []
    for solver_name in SOLVERS[name] + (("ADMM",) if name == "ct" else ()):
        solver = getattr(ij.solvers, solver_name)()
        f = jax.jit(lambda w, d, s=solver: (lambda sol: (sol.x, sol.stats.iterations, sol.stats.converged))(ij.solve(make(w, d), s)))
        (xs, its, ok), first, warm = _timed(f, jnp.float32(w), y, repeats=repeats)
        rows.append({"problem": name, "solver": solver_name, "max_iters": solver.max_iters, "tol": solver.tol,
                     "iterations": int(its), "converged": bool(ok), "psnr": float(ij.metrics.psnr(xs, x)),
                     "first_s": first, "warm": warm})
        _log(f"  defaults {name} {solver_name}: {int(its)} / {solver.max_iters} iterations, converged {bool(ok)}")
    return rows


def memory(name, solver_name, quick):
    """Temporary memory of the compiled gradient for max_iters 100, 400, 1600, both modes."""
    import jax
    import jax.numpy as jnp

    import invjax as ij

    make, x, y, w = problem(name, quick, jnp.float32)
    cls = getattr(ij.solvers, solver_name)
    rows = []
    for diff in ("implicit", "unroll"):
        for iters in (100, 400, 1600):
            s = cls(max_iters=iters, tol=0.0 if diff == "unroll" else 1e-4, diff=diff)
            f = jax.jit(jax.grad(lambda w: jnp.mean((ij.solve(make(w, y), s).x - x) ** 2)))
            mem = f.lower(jnp.asarray(w, jnp.float32)).compile().memory_analysis()
            rows.append({"diff": diff, "max_iters": iters,
                         "temp_mib": None if mem is None else mem.temp_size_in_bytes / 2**20})
    return rows


def batch(quick, repeats):
    """vmap of 8 weights against one solve, per image, for every solver."""
    import jax
    import jax.numpy as jnp

    import invjax as ij

    F = ij.functionals
    make, x, y, w = problem("deblur", quick, jnp.float32)
    A = make(w, y).op
    cases = {
        "CG": (ij.solvers.CG(max_iters=2000, tol=1e-6), F.SquaredL2(), 1e-2),
        "Landweber": (ij.solvers.Landweber(max_iters=5000, tol=1e-5), F.Huber(0.05), 1e-2),
        "FISTA": (ij.solvers.FISTA(max_iters=5000, tol=1e-4), F.TV(boundary="periodic"), w),
        "ADMM": (ij.solvers.ADMM(max_iters=5000, tol=1e-4), F.TV(boundary="periodic"), w),
        "PDHG": (ij.solvers.PDHG(max_iters=5000, tol=1e-4), F.TV(boundary="periodic"), w),
    }
    rows = []
    for name, (solver, reg, w0) in cases.items():
        weights = jnp.asarray(w0 * np.geomspace(0.5, 2.0, 8), jnp.float32)

        def one(wi):
            sol = ij.solve(ij.Problem(A, y, reg, wi), solver)
            return sol.x, sol.stats.iterations

        single = jax.jit(one)
        batched = jax.jit(jax.vmap(one))
        singles = []
        its = []
        for wi in weights:
            (_, k), _, st = _timed(single, wi, repeats=repeats)
            singles.append(st["median_s"])
            its.append(int(k))
        (_, kb), _, bt = _timed(batched, weights, repeats=repeats)
        per = bt["median_s"] / len(weights)
        rows.append({"solver": name, "batch": len(weights), "iterations_single": its,
                     "single_mean_s": float(np.mean(singles)), "batch_s": bt["median_s"], "per_image_s": per,
                     "per_image_vs_mean_single": per / float(np.mean(singles)),
                     "per_image_vs_single_at_most_iterations": per / singles[int(np.argmax(its))]})
    return rows


def accuracy(quick, tols=(1e-4, 1e-5, 1e-6, 1e-8)):
    """How the implicit gradient's error depends on the solve's ``tol`` (deblur, ADMM).

    The gradient of the MSE in the weight is ``(2/n) sum_p r_p dx_p`` with ``r = x - x_true`` and
    ``dx = dx/dweight``. Near the oracle weight this sum cancels: ``cancellation`` is
    ``sum |r dx| / |sum r dx|``, the factor by which a relative error of ``dx`` can grow in the
    gradient. Reported: the float64 gradient at each ``tol`` against the float64 central
    difference, and the relative error of the derivative image ``dx`` itself (float32 at the
    default ``tol`` and float64 at each ``tol``) against the float64 ``dx`` at the tightest.
    """
    import jax
    import jax.numpy as jnp

    import invjax as ij

    ref = reference("deblur", quick)["weight"][f"{min(REFERENCE_STEPS):g}"]
    rows = []

    def derivative(dtype, tol):
        make, x, y, w = problem("deblur", quick, dtype)
        s = ij.solvers.ADMM(tol=tol, max_iters=6000 if tol < 1e-4 else 1000, adapt_iters=10**6 if tol < 1e-4 else 100,
                            adjoint_failure="ignore", adjoint_iters=3000)

        @jax.jit
        def f(w):
            sol, dsol = jax.jvp(lambda v: ij.solve(make(v, y), s), (w,), (jnp.ones_like(w),))
            return sol.x, dsol.x, sol.stats.iterations, sol.stats.residual

        xs, dx, its, res = f(jnp.asarray(w, dtype))
        return (np.asarray(xs, np.float64), np.asarray(dx, np.float64), int(its), float(res), np.asarray(x, np.float64))

    jax.config.update("jax_enable_x64", True)
    try:
        runs = {("float64", t): derivative(jnp.float64, t) for t in tols}
    finally:
        jax.config.update("jax_enable_x64", False)
    runs[("float32", 1e-4)] = derivative(jnp.float32, 1e-4)
    _, dx_best, _, _, x_true = runs[("float64", min(tols))]
    for (dtype, tol), (xs, dx, its, res, _) in runs.items():
        r = xs - x_true
        grad = 2 * float(np.sum(r * dx)) / r.size
        rows.append({"dtype": dtype, "tol": tol, "iterations": its, "residual": res, "grad_weight": grad,
                     "rel_err_grad": abs(grad - ref) / abs(ref),
                     "rel_err_dx": float(np.linalg.norm(dx - dx_best) / np.linalg.norm(dx_best)),
                     "cancellation": float(np.sum(np.abs(r * dx)) / abs(np.sum(r * dx)))})
        _log(f"  accuracy {dtype} tol {tol:g}: {its} its, grad {grad:.5g} (err {rows[-1]['rel_err_grad']:.1e}), "
             f"dx err {rows[-1]['rel_err_dx']:.1e}, cancellation {rows[-1]['cancellation']:.0f}")
    return {"reference_grad_weight": ref, "rows": rows}


def default_case(name, n, dtype):
    """``(loss(w) -> (MSE, stats), w0)`` of one derivative-at-the-defaults case (float32 data
    made the same way whatever ``dtype``), and the solver class it uses at its defaults:

    * ``deblur``: the ``deblur`` problem above (``n`` 256 or 64; Shepp-Logan, periodic TV, w 5e-4),
      ``ADMM()``;
    * ``inpaint``: camera ``n``², ``Mask(bernoulli(key(1), 0.5))``, noise 0.02 (``key(0)``), the
      default ``TV()``, ``PDHG()``, w 5e-3 (the README's example at 128²);
    * ``crr``: camera ``n``², the 9x9 Gaussian blur (sigma 2 px), noise 0.01, the shipped CRR-NN,
      ``FISTA()``, w 5e-4.
    """
    import jax
    import jax.numpy as jnp

    import invjax as ij

    if name == "deblur":
        make, x, y, w = problem("deblur", n < 256, dtype)
        return (lambda s: lambda w: make(w, y)), x, w, "ADMM"
    x32 = ij.phantoms.camera(n).astype(jnp.float32)
    if name == "inpaint":
        A = ij.operators.Mask(jax.random.bernoulli(jax.random.key(1), 0.5, x32.shape).astype(dtype))
        y = A(ij.noise.gaussian(jax.random.key(0), x32, 0.02).astype(dtype))
        return (lambda s: lambda w: ij.Problem(A, y, ij.functionals.TV(), w)), x32.astype(dtype), 5e-3, "PDHG"
    psf = ij.operators.gaussian_psf(9, 2.0, dtype=jnp.float32)
    y = ij.operators.Convolution(psf, (n, n))(x32) + 0.01 * jax.random.normal(jax.random.key(0), x32.shape, jnp.float32)
    A = ij.operators.Convolution(psf.astype(dtype), (n, n))
    crr = ij.learned.pretrained("crr-nn")
    return (lambda s: lambda w: ij.Problem(A, y.astype(dtype), crr, w)), x32.astype(dtype), 5e-4, "FISTA"


# float64 references of the cases: solved far beyond the defaults (the ADMM penalty keeps adapting)
# (the float64 derivative solve at 256² ADMM-TV stops near 1e-2 within 1000 CG iterations: it gets
# 5000 and reports; the error is taken against the central difference)
_REF_ADJOINT = dict(adjoint_iters=5000, adjoint_failure="ignore")
DEFAULT_REFERENCE = {"deblur": lambda s: s.ADMM(max_iters=20000, tol=1e-10, adapt_iters=10**6, **_REF_ADJOINT),
                     "inpaint": lambda s: s.ADMM(max_iters=20000, tol=1e-10, adapt_iters=10**6, **_REF_ADJOINT),
                     "crr": lambda s: s.FISTA(max_iters=20000, tol=1e-10, **_REF_ADJOINT)}


def defaults_accuracy(cases):
    """The weight gradient of the MSE at each solver's DEFAULT settings in float32 against a
    float64 reference: central differences (relative step 1e-4) of solves to ``tol`` 1e-10, with
    the float64 implicit gradient there beside it (``rel_err_vs_implicit``)."""
    import jax
    import jax.numpy as jnp

    import invjax as ij

    rows = []
    for name, n in cases:
        jax.config.update("jax_enable_x64", True)
        try:
            build, x, w, solver_name = default_case(name, n, jnp.float64)
            ref_solver = DEFAULT_REFERENCE[name](ij.solvers)

            def loss(w, s=ref_solver):
                sol = ij.solve(build(s)(w), s)
                return jnp.mean((sol.x - x) ** 2), sol.stats

            t0 = time.perf_counter()
            g64, st = jax.jit(jax.grad(loss, has_aux=True))(jnp.float64(w))
            f = jax.jit(lambda w: loss(w)[0])
            h = 1e-4 * w
            cd = (float(f(w + h)) - float(f(w - h))) / (2 * h)
            ref = {"solver": repr(ref_solver) + ", float64", "iterations": int(st.iterations),
                   "converged": bool(st.converged), "residual": float(st.residual), "grad_implicit": float(g64),
                   "grad_central_difference": cd, "seconds": time.perf_counter() - t0}
        finally:
            jax.config.update("jax_enable_x64", False)
        build, x, w, solver_name = default_case(name, n, jnp.float32)
        solver = getattr(ij.solvers, solver_name)(adjoint=ij.solvers.ImplicitAdjoint(failure="ignore"))

        def loss32(w):
            sol = ij.solve(build(solver)(w), solver)
            return jnp.mean((sol.x - x) ** 2), (sol.stats, ij.metrics.psnr(sol.x, x))

        (g, (st, psnr)), first, warm = _timed(jax.jit(jax.grad(loss32, has_aux=True)), jnp.float32(w), repeats=1)
        raising = getattr(ij.solvers, solver_name)()
        try:
            mse = jax.jit(jax.grad(lambda w: jnp.mean((ij.solve(build(raising)(w), raising).x - x) ** 2)))
            jax.block_until_ready(mse(jnp.float32(w)))
            raised = None
        except Exception as err:  # the default failure policy: what a user sees
            raised = f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"
        row = {"case": name, "n": n, "solver": f"{solver_name}() defaults, float32", "weight": w,
               "iterations": int(st.iterations), "converged": bool(st.converged), "residual": float(st.residual),
               "psnr": float(psnr), "grad": float(g), "default_policy_raised": raised, "reference": ref,
               "rel_err": abs(float(g) - cd) / abs(cd),
               "rel_err_vs_implicit": abs(float(g) - ref["grad_implicit"]) / abs(ref["grad_implicit"]), "warm": warm}
        rows.append(row)
        _log(f"  defaults accuracy {name} {n}²: {row['iterations']} its, grad {row['grad']:.5g} vs {ref['grad_implicit']:.5g} "
             f"(cd {cd:.5g}): rel err {row['rel_err']:.2e}; default policy raised: {raised}")
    return rows


def _table(header, rows):
    """A markdown table (after a blank line) from a header and rows of cells."""
    return ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def markdown(out):
    lines = ["| problem | solver | dtype | tol | its | solve | grad (weight) | ratio | jvp (data) | ratio | "
             "unrolled grad | rel. err. weight | rel. err. data |", "|" + "---|" * 13] if out["rows"] else []
    for r in out["rows"]:
        ref = out["reference"].get(r["problem"], {})
        ew = ed = "–"
        if ref:
            h = f"{min(REFERENCE_STEPS):g}"
            fw, fd = ref["weight"][h], ref["data"][h]
            ew = f"{abs(r['grad_weight']['value'] - fw) / abs(fw):.1e}"
            ed = f"{abs(r['jvp_data']['value'] - fd) / abs(fd):.1e}"
        lines.append(
            f"| {r['problem']} | {r['solver']} | {r['dtype']} | {r['tol']:g} | {r['iterations']} | "
            f"{r['forward']['warm']['median_s'] * 1e3:.0f} ms | {r['grad_weight']['warm']['median_s'] * 1e3:.0f} ms | "
            f"{r['grad_over_solve']:.2f} | {r['jvp_data']['warm']['median_s'] * 1e3:.0f} ms | {r['jvp_over_solve']:.2f} | "
            f"{r['grad_weight_unrolled']['warm']['median_s'] * 1e3:.0f} ms ({r['grad_weight_unrolled']['over_solve']:.1f}x) | "
            f"{ew} | {ed} |")
    if out.get("defaults"):
        lines += _table(["problem", "solver", "default max_iters", "tol", "iterations", "converged", "PSNR", "warm solve"],
                        [[r["problem"], r["solver"], r["max_iters"], f"{r['tol']:g}", r["iterations"], r["converged"],
                          f"{r['psnr']:.2f}", f"{r['warm']['median_s'] * 1e3:.0f} ms"] for r in out["defaults"]])
    if out.get("memory"):
        lines += _table(["problem", "solver", "diff", "temp MiB @100", "@400", "@1600"],
                        [[*key.split("/"), diff, *(f"{r['temp_mib']:.1f}" for r in rows if r["diff"] == diff)]
                         for key, rows in out["memory"].items() for diff in ("implicit", "unroll")])
    if out.get("accuracy"):
        lines += _table(["deblur ADMM", "tol", "iterations", "grad (weight)", "rel. err.", "rel. err. of dx/dweight",
                         "cancellation"],
                        [[r["dtype"], f"{r['tol']:g}", r["iterations"], f"{r['grad_weight']:.5g}", f"{r['rel_err_grad']:.1e}",
                          f"{r['rel_err_dx']:.1e}", f"{r['cancellation']:.0f}"] for r in out["accuracy"]["rows"]])
    if out.get("defaults_accuracy"):
        lines += _table(["case", "size", "solver (defaults, float32)", "its", "converged", "grad (weight)",
                         "float64 implicit (ref)", "its (ref)", "float64 central diff. (ref)", "rel. err. vs central diff.",
                         "default policy"],
                        [[r["case"], f"{r['n']}²", r["solver"], r["iterations"], r["converged"], f"{r['grad']:.5g}",
                          f"{r['reference']['grad_implicit']:.5g}", r["reference"]["iterations"],
                          f"{r['reference']['grad_central_difference']:.5g}", f"{r['rel_err']:.1e}",
                          "raises" if r["default_policy_raised"] else "ok"] for r in out["defaults_accuracy"]])
    if out.get("batch"):
        lines += _table(["solver", "batch", "per image / mean single solve", "per image / single at the most iterations"],
                        [[r["solver"], r["batch"], f"{r['per_image_vs_mean_single']:.2f}",
                          f"{r['per_image_vs_single_at_most_iterations']:.2f}"] for r in out["batch"]])
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", choices=("deblur", "ct"), default=None)
    ap.add_argument("--solvers", default=None, help="comma-separated subset")
    ap.add_argument("--tols", default="1e-4,1e-5", help="float32 tolerances (comma-separated)")
    ap.add_argument("--tol64", type=float, default=1e-6, help="the float64 rows' tolerance (0: none)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-reference", action="store_true")
    ap.add_argument("--memory", action="store_true", help="also the memory-versus-max_iters table")
    ap.add_argument("--batch", action="store_true", help="also the vmap section")
    ap.add_argument("--accuracy", action="store_true", help="only the accuracy-against-tol section (deblur, ADMM)")
    ap.add_argument("--defaults-accuracy", default=None, metavar="CASES",
                    help="only the gradient error at each solver's defaults, e.g. deblur:256,inpaint:64,crr:256 "
                         "(writes derivatives_defaults.json)")
    ap.add_argument("--output", type=Path, default=None)
    args = ap.parse_args(argv)
    import jax

    out = {"machine": _machine(), "jax": jax.__version__, "invjax": _invjax_fingerprint(),
           "started": time.strftime("%Y-%m-%d %H:%M:%S"), "args": vars(args) | {"output": str(args.output)},
           "rows": [], "reference": {}, "memory": {}}
    path = args.output or RESULTS / ("derivatives_quick.json" if args.quick else "derivatives.json")
    path.parent.mkdir(parents=True, exist_ok=True)

    def save():
        path.write_text(json.dumps(out, indent=1))

    names = [args.only] if args.only else ["deblur", "ct"]
    if args.defaults_accuracy:
        path = args.output or RESULTS / "derivatives_defaults.json"
        names = []
        out["defaults_accuracy"] = []
        for case in args.defaults_accuracy.split(","):
            name, n = case.split(":")
            out["defaults_accuracy"] += defaults_accuracy([(name, int(n))])
            save()
    if args.accuracy:
        names = []
        out["accuracy"] = accuracy(args.quick)
    for name in names:
        out.setdefault("defaults", []).extend(defaults(name, args.quick, args.repeats))
        save()
        if not args.no_reference:
            _log(f"{name}: float64 reference")
            out["reference"][name] = reference(name, args.quick)
            save()
        solvers = SOLVERS[name] if args.solvers is None else [s for s in args.solvers.split(",") if s in SOLVERS[name]]
        for solver in solvers:
            for tol in (float(t) for t in args.tols.split(",")):
                _log(f"{name} {solver} float32 tol {tol:g}")
                out["rows"].append(measure(name, solver, tol, args.quick, args.repeats))
                save()
            if args.tol64 > 0:
                _log(f"{name} {solver} float64 tol {args.tol64:g}")
                out["rows"].append(measure(name, solver, args.tol64, args.quick, args.repeats, x64=True))
                save()
            if args.memory:
                out["memory"][f"{name}/{solver}"] = memory(name, solver, args.quick)
                save()
    if args.batch:
        _log("batch")
        out["batch"] = batch(args.quick, args.repeats)
    out["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    save()
    print(markdown(out))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
