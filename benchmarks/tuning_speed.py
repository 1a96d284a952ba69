"""Parameter selection at the solver defaults: SURE's time and accuracy on one natural image,
and the cost of one ``fit`` step against a batch solve.

The problem is the ``deblur`` problem of ``tuning.py`` (scikit-image's ``camera`` cut into 128²
tiles, 9x9 Gaussian blur sigma = 2 px, noise sigma = 0.01) with the default ``TV()`` (Neumann
boundary, so ADMM's x-step is the FFT-preconditioned conjugate gradient):

* the grid oracle of the first held-out tile: 40 log-spaced weights in [1e-5, 1e-1], each
  solved by ``ADMM(max_iters=3000, tol=1e-5)``, best PSNR;
* ``tuning.sure`` (default search: 8-point grid over [1e-6, 1e2] and 6 zoom rounds)
  with ``ADMM()`` at its defaults and with ``ADMM(max_iters=300, tol=1e-5)``: the chosen weight,
  its PSNR (solved as the oracle's), the gap, the warm time (the compiled program's second run)
  and whether the solve at the chosen weight converged;
* ``tuning.fit`` on the 8 training tiles (``ADMM()``, ``loss="psnr"``, warm-started): seconds per
  outer step against a warm ``vmap``-ed solve of the same 8 tiles at the same weight.

Usage::

    python benchmarks/tuning_speed.py            # ~5 min on 2 cores
    python benchmarks/tuning_speed.py --quick    # 64² tiles
    python benchmarks/tuning_speed.py --sure-vs main~3   # SURE only: this tree against a git ref, alternating

``--sure-vs REF`` times ``tuning.sure`` at ``ADMM()`` defaults on the first held-out tile with this
tree's invjax and with the invjax of git revision ``REF`` (exported with ``git archive`` to a
temporary folder), each in its own fresh process, alternating ``--repeats`` times, so that both
see the same load on a shared core; it prints each warm time and the ratio of the medians.

Writes ``benchmarks/results/tuning_speed.json`` and prints a markdown table.
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

from tv_deconvolution import _invjax_fingerprint, _machine  # noqa: E402


def _log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--fit-steps", type=int, default=6)
    ap.add_argument("--output", type=Path, default=None)
    ap.add_argument("--sure-vs", default=None, metavar="REF", help="time SURE against invjax at git revision REF")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return _sure_child(args.quick, args.child)
    if args.sure_vs:
        return _sure_versus(args)

    import jax
    import jax.numpy as jnp

    import invjax as ij
    import invjax.tuning  # noqa: F401
    from tuning import deblur

    P = deblur(args.quick)
    tv = ij.functionals.TV()
    A = ij.operators.Convolution(ij.operators.gaussian_psf(9, 2.0), P["x_test"].shape[1:])

    def make(w, y):
        return ij.Problem(A, y, tv, w)

    x, y = P["x_test"][0], P["y_test"][0]
    sigma = float(P["sigma_test"][0])
    accurate = ij.solvers.ADMM(max_iters=3000, tol=1e-5)

    @jax.jit
    def psnr_at(w):
        sol = ij.solve(make(w, y), accurate)
        return ij.metrics.psnr(sol.x, x, data_range=1.0), sol.stats.converged

    out = {"machine": _machine(), "jax": jax.__version__, "invjax": _invjax_fingerprint(),
           "started": time.strftime("%Y-%m-%d %H:%M:%S"), "problem": "camera tile " + "x".join(map(str, x.shape))
           + ", 9x9 Gaussian blur sigma 2 px, noise 0.01, TV() (Neumann)", "rows": []}

    grid = np.logspace(-5, -1, 40)
    _log("grid oracle")
    curve = jax.jit(jax.vmap(psnr_at))(jnp.asarray(grid, jnp.float32))
    scores, ok = np.asarray(curve[0]), np.asarray(curve[1])
    i = int(np.argmax(scores))
    out["oracle"] = {"weight": float(grid[i]), "psnr": float(scores[i]), "grid": grid.tolist(),
                     "curve": scores.tolist(), "converged": int(ok.sum())}
    _log(f"  oracle {grid[i]:.3g}: {scores[i]:.2f} dB ({int(ok.sum())}/40 converged)")

    key = jax.random.PRNGKey(3)
    for label, solver in [("ADMM() defaults", ij.solvers.ADMM()),
                          ("ADMM(max_iters=300, tol=1e-5)", ij.solvers.ADMM(max_iters=300, tol=1e-5))]:
        f = jax.jit(lambda y, s=solver: ij.tuning.sure(make, y, sigma, key, solver=s))
        t0 = time.perf_counter()
        try:
            jax.block_until_ready(f(y))
        except Exception as e:  # a rule that raises is a result too
            out["rows"].append({"method": "sure", "solver": label, "error": f"{type(e).__name__}: {e}"})
            _log(f"  sure {label}: raised {type(e).__name__}: {str(e)[:200]}")
            continue
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        info = jax.block_until_ready(f(y))
        w = info.weight
        warm = time.perf_counter() - t0
        p, conv = psnr_at(w)
        row = {"method": "sure", "solver": label, "weight": float(w), "psnr": float(p), "gap": float(scores[i] - p),
               "first_s": first, "warm_s": warm, "solves": int(info.solves),
               "converged_at_choice": bool(info.converged), "at_bound": bool(info.at_bound)}
        out["rows"].append(row)
        _log(f"  sure {label}: {float(w):.3g}, {float(p):.2f} dB (gap {row['gap']:.2f}), warm {warm:.1f} s, first {first:.1f} s")

    # fit: seconds per outer step against one warm batch solve of the training tiles
    solver = ij.solvers.ADMM()
    xtr, ytr = P["x_train"], P["y_train"]
    w0 = 1e-4
    batch = jax.jit(jax.vmap(lambda yi: ij.solve(make(jnp.float32(w0), yi), solver).x))
    jax.block_until_ready(batch(ytr))
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        jax.block_until_ready(batch(ytr))
        times.append(time.perf_counter() - t0)
    batch_s = float(np.median(times))
    ij.tuning.fit(make, xtr, ytr, init=w0, solver=solver, max_iters=1, loss="psnr", progress=False)  # compile
    t0 = time.perf_counter()
    res = ij.tuning.fit(make, xtr, ytr, init=w0, solver=solver, max_iters=args.fit_steps, loss="psnr", progress=False)
    weight, hist = res.weight, res.history
    total = time.perf_counter() - t0
    per_step = np.asarray(hist.seconds)
    out["fit"] = {"steps": len(per_step), "seconds_per_step": per_step.tolist(), "total_s": total,
                  "batch_solve_s": batch_s, "median_step_over_batch_solve": float(np.median(per_step) / batch_s),
                  "first_step_over_batch_solve": float(per_step[0] / batch_s),
                  "weights": [float(v) for v in hist.weight], "iterations": np.asarray(hist.iterations).mean(axis=1).tolist()}
    _log(f"  fit: median step {np.median(per_step):.2f} s, batch solve {batch_s:.2f} s "
         f"(ratio {out['fit']['median_step_over_batch_solve']:.2f}; first step {out['fit']['first_step_over_batch_solve']:.2f})")
    out["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    path = args.output or HERE / "results" / ("tuning_speed_quick.json" if args.quick else "tuning_speed.json")
    path.write_text(json.dumps(out, indent=1))

    print(f"\n{out['problem']}; oracle {out['oracle']['weight']:.3g} at {out['oracle']['psnr']:.2f} dB\n")
    print("| rule | solver | weight | PSNR | gap to oracle | warm s | solves |\n|---|---|---|---|---|---|---|")
    for r in out["rows"]:
        if "error" in r:
            print(f"| {r['method']} | {r['solver']} | raised: {r['error'][:80]} | | | | |")
        else:
            print(f"| {r['method']} | {r['solver']} | {r['weight']:.3g} | {r['psnr']:.2f} | {r['gap']:.2f} | "
                  f"{r['warm_s']:.1f} | {r['solves']} |")
    f = out["fit"]
    print(f"\nfit: {f['steps']} steps, median {np.median(f['seconds_per_step']):.2f} s per step; a batch solve of the "
          f"same images {f['batch_solve_s']:.2f} s; ratio {f['median_step_over_batch_solve']:.2f}")
    print(f"\nwrote {path}")


def _sure_child(quick, label):
    """One fresh process: SURE at ADMM() defaults on the first held-out tile, first and warm time."""
    import jax

    import invjax as ij
    import invjax.tuning  # noqa: F401
    from tuning import deblur

    P = deblur(quick)
    A = ij.operators.Convolution(ij.operators.gaussian_psf(9, 2.0), P["x_test"].shape[1:])
    tv = ij.functionals.TV()

    def make(w, y):
        return ij.Problem(A, y, tv, w)

    y, sigma, key, solver = P["y_test"][0], float(P["sigma_test"][0]), jax.random.PRNGKey(3), ij.solvers.ADMM()
    # (solver= as a keyword runs in the older revisions too; they returned the weight alone)
    f = jax.jit(lambda y: ij.tuning.sure(make, y, sigma, key, solver=solver))

    def weight(r):
        return r.weight if hasattr(r, "weight") else r
    t0 = time.perf_counter()
    jax.block_until_ready(f(y))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = jax.block_until_ready(f(y))
    warm = time.perf_counter() - t0
    print("RESULT " + json.dumps({"label": label, "first_s": first, "warm_s": warm, "weight": float(weight(res)),
                                  "invjax": ij.__file__}), flush=True)


def _sure_versus(args):
    import os
    import subprocess
    import tarfile
    import tempfile

    root = HERE.parent
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "ref.tar"
        subprocess.run(["git", "-C", str(root), "archive", "-o", str(archive), args.sure_vs, "invjax"], check=True)
        ref = Path(tmp) / "ref"
        with tarfile.open(archive) as tar:
            tar.extractall(ref)
        trees = {"this tree": str(root), f"ref {args.sure_vs}": str(ref)}
        rows = []
        for _ in range(args.repeats):
            for label, tree in trees.items():
                env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{HERE}"}
                cmd = [sys.executable, str(Path(__file__).resolve()), "--child", label] + (["--quick"] if args.quick else [])
                out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp)
                line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
                if line is None:
                    raise RuntimeError(f"{label}: no result\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
                row = json.loads(line[len("RESULT "):])
                rows.append(row)
                _log(f"  sure ADMM() defaults, {label}: warm {row['warm_s']:.1f} s, first {row['first_s']:.1f} s, "
                     f"weight {row['weight']:.3g} ({row['invjax']})")
    for label in trees:
        warm = [r["warm_s"] for r in rows if r["label"] == label]
        print(f"| {label} | warm s {', '.join(f'{w:.1f}' for w in warm)} | median {np.median(warm):.1f} |")
    new, old = ([r["warm_s"] for r in rows if r["label"] == label] for label in trees)
    print(f"ratio this tree / ref (medians): {np.median(new) / np.median(old):.2f}")
    return rows


if __name__ == "__main__":
    main()
