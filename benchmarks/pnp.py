"""Plug-and-play at the speed of its denoiser: time per PnP iteration / one denoiser call.

For the shipped DnCNN (and any other shipped denoiser named with ``--models``) on a 256² (and
128²) deblurring problem (Gaussian blur, noise 0.01): one jitted denoiser call, and one
iteration of PnP-ADMM (fixed rho, FFT x-step) and PnP-FISTA, each timed as a whole compiled
solve of ``--iters`` iterations (``tol=0``: every iteration runs) divided by ``--iters``; warm
(compiled), median of ``--repeats``. The ratio "PnP iteration / denoiser call" is the issue's
figure of merit: an iteration is one denoiser call plus an FFT solve, so it should be near 1.

Usage::

    python benchmarks/pnp.py --output benchmarks/results/pnp.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def _median_time(fn, repeats):
    import jax

    jax.block_until_ready(fn())  # compile
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--models", nargs="+", default=["dncnn"])
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--output", type=Path, default=None)
    args = ap.parse_args(argv)

    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpy as np
    from skimage import data as skdata
    from skimage.transform import resize

    import invjax as ij

    rows = []
    for name in args.models:
        model = ij.learned.pretrained(name)
        for n in args.sizes:
            x = jnp.asarray(resize(skdata.camera() / 255.0, (n, n), anti_aliasing=True), jnp.float32)
            k = jnp.arange(-4, 5, dtype=jnp.float32)
            g = jnp.exp(-(k[:, None] ** 2 + k[None, :] ** 2) / (2 * 1.5**2))
            A = ij.operators.Convolution(g / g.sum(), shape=(n, n))
            y = ij.noise.gaussian(jax.random.PRNGKey(0), A(x), 0.01)
            sigma_d = 8 / 255
            denoise = eqx.filter_jit(lambda m, v: m.denoise(v, sigma_d))
            t_den = _median_time(lambda: denoise(model, y), args.repeats)
            weight = 1e-4
            problem = ij.Problem(A, y, ij.learned.PnP(model), weight)
            solvers = {
                "PnP-ADMM": ij.solvers.ADMM(rho=weight / sigma_d**2, adapt_iters=0, max_iters=args.iters, tol=0.0),
                "PnP-FISTA": ij.solvers.FISTA(max_iters=args.iters, tol=0.0),
            }
            row = {"model": name, "size": n, "denoiser_s": t_den}
            for label, solver in solvers.items():
                run = eqx.filter_jit(lambda p, s=solver: ij.solve(p, s).x)
                t = _median_time(lambda: run(problem), args.repeats) / args.iters
                row[label] = {"iteration_s": t, "ratio": t / t_den,
                              "psnr": float(ij.metrics.psnr(run(problem), x, data_range=1.0))}
            rows.append(row)
            print(f"{name} {n}²: denoiser {t_den * 1e3:.1f} ms; " + "; ".join(
                f"{k} {row[k]['iteration_s'] * 1e3:.1f} ms/it = {row[k]['ratio']:.2f}x the denoiser, "
                f"{row[k]['psnr']:.2f} dB after {args.iters} its" for k in solvers), flush=True)
    print("\n| model | size | denoiser call (ms) | PnP-ADMM iteration (ms) | ratio | PnP-FISTA iteration (ms) | ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['size']}² | {r['denoiser_s'] * 1e3:.1f} | {r['PnP-ADMM']['iteration_s'] * 1e3:.1f} | "
              f"{r['PnP-ADMM']['ratio']:.2f} | {r['PnP-FISTA']['iteration_s'] * 1e3:.1f} | {r['PnP-FISTA']['ratio']:.2f} |")
    if args.output is not None:
        record = {"command": " ".join(["python", "benchmarks/pnp.py"] + (argv or sys.argv[1:])),
                  "machine": _common.machine(), "jax": jax.__version__, "iters": args.iters, "rows": rows,
                  "xla_flags": os.environ.get("XLA_FLAGS", ""),
                  "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                  "load_avg": os.getloadavg() if hasattr(os, "getloadavg") else None}
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(record, indent=1))
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
