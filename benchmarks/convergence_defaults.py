"""Does every solver's DEFAULT reach its ``converged`` on natural images? (issue 20, item 3)

256² grayscale camera, astronaut and coffee (scikit-image), 9x9 Gaussian blur (sigma 2 px),
Gaussian noise 0.01, float32. Regularizers: the default ``TV()`` (weight 5e-4) with ``ADMM()``,
``PDHG()`` and ``FISTA()``, and the shipped CRR-NN (weight 5e-4) with ``FISTA()``.
Each row: iterations, ``converged``, the final stopping residual, the PSNR, and the PSNR of the
same problem solved to ``tol=1e-6`` (float32, 3 000 iterations at most) — a default that stops
short of its solution shows as a gap.

    python benchmarks/convergence_defaults.py [--size 256] [--output benchmarks/results/convergence_defaults.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def images(n):
    import jax
    import jax.numpy as jnp
    import numpy as np
    from skimage import data, transform
    from skimage.color import rgb2gray

    out = {}
    for name in ("camera", "astronaut", "coffee"):
        img = getattr(data, name)()
        img = rgb2gray(img) if img.ndim == 3 else img / 255.0
        out[name] = jnp.asarray(transform.resize(np.asarray(img, np.float64), (n, n), anti_aliasing=True), jnp.float32)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--output", type=Path, default=RESULTS / "convergence_defaults.json")
    args = ap.parse_args(argv)
    import jax
    import jax.numpy as jnp

    import invjax as ij

    n = args.size
    psf = ij.operators.gaussian_psf(9, 2.0, dtype=jnp.float32)
    A = ij.operators.Convolution(psf, (n, n))
    crr = ij.learned.pretrained("crr-nn")
    # (CRR-NN with PDHG goes through the ridge's iterative prox: its 3000-iteration reference took
    # over 8 minutes per image on one shared core, so it is not in the default run)
    configs = [("TV", "ADMM"), ("TV", "PDHG"), ("TV", "FISTA"), ("CRR-NN", "FISTA")]
    rows = []
    out = {"machine": machine(), "jax": jax.__version__, "size": n, "rows": rows,
           "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    for name, x in images(n).items():
        y = A(x) + 0.01 * jax.random.normal(jax.random.key(0), x.shape, jnp.float32)
        for reg_name, solver_name in configs:
            reg = ij.functionals.TV() if reg_name == "TV" else crr
            problem = ij.Problem(A, y, reg, 5e-4)
            t0 = time.perf_counter()
            sol = ij.solve(problem, getattr(ij.solvers, solver_name)())
            jax.block_until_ready(sol.x)
            seconds = time.perf_counter() - t0
            ref = ij.solve(problem, getattr(ij.solvers, solver_name)(tol=1e-6, max_iters=3000))
            row = {"image": name, "regularizer": reg_name, "solver": f"{solver_name}()",
                   "iterations": int(sol.stats.iterations), "converged": bool(sol.stats.converged),
                   "residual": float(sol.stats.residual), "psnr": float(ij.metrics.psnr(sol.x, x)),
                   "psnr_tight": float(ij.metrics.psnr(ref.x, x)), "tight_iterations": int(ref.stats.iterations),
                   "distance_to_tight": float(jnp.linalg.norm(sol.x - ref.x) / jnp.linalg.norm(ref.x)),
                   "first_call_s": seconds}
            rows.append(row)
            print(f"{name:9s} {reg_name:6s} {solver_name:5s} {row['iterations']:5d} its converged={row['converged']!s:5s} "
                  f"res {row['residual']:.1e}  {row['psnr']:.2f} dB (tol 1e-6: {row['psnr_tight']:.2f} dB, "
                  f"{row['tight_iterations']} its; rel. distance {row['distance_to_tight']:.1e})", flush=True)
            out["rows"] = rows
            args.output.write_text(json.dumps(out, indent=1))  # after every row: a stopped run keeps what it measured
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
