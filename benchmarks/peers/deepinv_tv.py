"""DeepInverse worker for ``benchmarks/tv_deconvolution.py`` (runs in ``benchmarks/.venvs/deepinv``).

Solves the TV deconvolution problem of the data file written by the main script,

    argmin_x  1/2 ||A x - y||^2 + lambda ||D x||_{1,2},

with DeepInverse's proximal gradient descent, set up as in its documented example
``examples/optimization/demo_TV_minimisation.py``: ``optim_builder(iteration="PGD",
prior=TVPrior(n_it_max=20), data_fidelity=L2(), params_algo={"stepsize": 1.0, "lambda": lam})``
on the physics ``BlurFFT`` (FFT, circular boundary: the same operator as invjax's
``Convolution``; checked against the main script's clean blurred image). Differences from the
invjax/SCICO problem, stated in the report: DeepInverse's TV (``TVDenoiser.nabla``) sets the
difference leaving the image to 0 (Neumann boundary), not periodic; its TV prox is an inner
over-relaxed Chambolle-Pock loop of at most ``n_it_max`` iterations, warm-started across outer
iterations; the start is ``A^T y`` (DeepInverse's default).

``TVPrior``'s own defaults (``n_it_max=1000``, ``def_crit=1e-8``) make every PGD iteration run
1000 inner iterations; the example's ``n_it_max=20`` is used (``--inner-iters``).

Every run builds a new model (the TV prox keeps warm-start state between calls; building is
timed separately as ``build_s``) and calls it under ``torch.no_grad()``, timed as ``warm_s``;
the instrumented PSNR trace is a separate, untimed run.

Usage (called by the main script)::

    python deepinv_tv.py --data DATA.npz --out OUT.json --stage budget --iters 100 --trace-iters 1000
    python deepinv_tv.py --data DATA.npz --out OUT.json --stage time --iters K
"""

import argparse
import json
import platform
import sys
import time
from importlib import metadata

import numpy as np


def _versions():
    out = {"python": platform.python_version()}
    for pkg in ("deepinv", "torch", "torchvision", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def _distributions():
    return {d.metadata["Name"]: d.version for d in metadata.distributions()}


def _psnr(x, ref):
    peak = float(ref.max() - ref.min())
    mse = float(np.mean((np.asarray(x, np.float64) - ref) ** 2))
    return 10.0 * np.log10(peak**2 / mse)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--stage", choices=("budget", "time"), required=True)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--trace-iters", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--inner-iters", type=int, default=20, help="TVPrior n_it_max (example: 20)")
    ap.add_argument("--stepsize", type=float, default=1.0, help="PGD step (example: 1.0; ||A||^2 <= 1 here)")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    args = ap.parse_args(argv)

    import torch

    import deepinv as dinv

    if args.threads > 0:
        torch.set_num_threads(args.threads)

    data = np.load(args.data)
    x_true = np.asarray(data["x_true"], np.float64)
    n0, n1 = data["y"].shape
    y = torch.from_numpy(np.asarray(data["y"], np.float32))[None, None]
    psf = torch.from_numpy(np.asarray(data["psf"], np.float32))[None, None]
    lam = float(data["lam"])

    def make(max_iter, **kw):
        physics = dinv.physics.BlurFFT(img_size=(1, n0, n1), filter=psf)
        model = dinv.optim.optim_builder(
            iteration="PGD",
            prior=dinv.optim.TVPrior(n_it_max=args.inner_iters),
            data_fidelity=dinv.optim.L2(),
            early_stop=False,
            max_iter=max_iter,
            params_algo={"stepsize": args.stepsize, "lambda": lam},
            **kw,
        )
        return model, physics

    def run(max_iter):
        t0 = time.perf_counter()
        model, physics = make(max_iter)
        t1 = time.perf_counter()
        with torch.no_grad():
            x = model(y, physics)
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1, x[0, 0].numpy(), physics

    result = {"versions": _versions(), "distributions": _distributions(), "torch_threads": torch.get_num_threads(),
              "inner_iters": args.inner_iters, "stepsize": args.stepsize,
              "setup": "optim_builder('PGD', prior=TVPrior(n_it_max), data_fidelity=L2(), "
                       "params_algo={'stepsize', 'lambda'}, early_stop=False) on BlurFFT"}
    build, solve, x, physics = run(args.iters)
    if args.stage == "budget":
        result["first_call_s"] = build + solve
        result["first_call_build_s"] = build
        ax = physics.A(torch.from_numpy(np.asarray(data["x_true"], np.float32))[None, None])[0, 0].numpy()
        result["operator_max_abs_diff"] = float(np.max(np.abs(ax - data["y_clean"])))
    warm, builds = [], []
    for _ in range(args.repeats):
        build, solve, x, _ = run(args.iters)
        warm.append(solve)
        builds.append(build)
    result["iters"] = args.iters
    result["warm_s"] = warm  # the model call only
    result["build_s"] = builds  # building physics, prior and model
    result["psnr"] = _psnr(x, x_true)
    if args.stage == "budget":
        np.save(args.out.replace(".json", "_x.npy"), x)
    if args.trace_iters > 0:
        metric = {"psnr_ref": lambda hist, x_prev, x_cur: _psnr(x_cur[0].numpy(), x_true)}
        model, physics = make(args.trace_iters, custom_metrics=metric)
        with torch.no_grad():
            _, metrics = model(y, physics, compute_metrics=True)
        result["trace_psnr"] = [float(v) for v in metrics["psnr_ref"][0]]
    with open(args.out, "w") as fh:
        json.dump(result, fh)
    print(json.dumps({k: v for k, v in result.items() if k != "trace_psnr"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
