"""Learned regularizers and denoisers against TV and BM3D: denoising, deblurring and CT.

All figures are on images never trained on: the last ``--held-out`` images (by name) of the
training folder (``../shared/data/train400``: 180x180 grayscale natural images, the kind of
BSD68), the ones ``benchmarks/train_denoisers.py`` holds out. Weights and penalties of the
learned methods are chosen on the first ``--select`` *training* images and then fixed; TV gets
its oracle weight per image (the best of a grid against the ground truth), which favours it.

1. **Denoising** at sigma = 15 and 25 (of 255), full 180x180 images: TV (exact prox, oracle
   weight per image), BM3D (the ``bm3d`` package in its own venv ``benchmarks/.venvs/bm3d``, the
   package's default profile with the true sigma), and the shipped CRR-NN, WCRR-NN and DnCNN
   (``ij.learned.pretrained(name).denoise(y, sigma)``). Time per image: the median of 3 warm
   calls on one image (compilation excluded, reported apart), BM3D per call.
2. **Deblurring**: 128x128 centre crops, Gaussian blur (std 1.6 px, 13x13, periodic), noise
   std 0.01. TV (ADMM, oracle weight), CRR-NN as a Problem regularizer solved by FISTA with its
   guaranteed step ``1 / (||A||^2 + w L_R)`` (weight ``w = c sigma_n^2``, ``c`` chosen on
   training crops), PnP-DnCNN (ADMM with fixed ``rho``: the denoiser runs at ``sigma_d =
   sqrt(w / rho)``, ``sigma_d`` chosen on training crops).
3. **CT**: the same crops, 30-angle parallel-beam projections (``ParallelBeam2D``), noise std 1 %
   of the mean projection value; TV by PDHG, CRR-NN by FISTA, PnP-DnCNN by ADMM (CG x-step).
4. **Monotone decrease**: gradient descent with the stated step ``1 / (||A||^2 + w L_R)`` on the
   deblurring objective with CRR-NN: the largest increase of the objective over 300 steps (must
   be <= 0 up to float32 rounding).

The learning curves and training budgets of the shipped models (from their metadata) are copied
into the JSON. Usage::

    python benchmarks/learned_denoise.py --data ../shared/data/train400 \\
        --output benchmarks/results/learned_denoise.json
    python benchmarks/learned_denoise.py --data ../shared/data/train400 --quick --skip-bm3d   # smoke
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402  (benchmarks/_common.py: machine description, peer venvs)

SIGMAS = (15, 25)
MODELS = ("crr-nn", "wcrr-nn", "dncnn", "ffdnet")
BM3D_SPEC = {"install": [["bm3d==4.0.3"]], "check": "import bm3d"}
BLUR_STD, BLUR_SIZE, BLUR_NOISE = 1.6, 13, 0.01
CT_ANGLES, CT_NOISE = 30, 0.01
CROP = 128


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


def _psnr(out, ref):
    import invjax as ij

    return [float(ij.metrics.psnr(o, r, data_range=1.0)) for o, r in zip(out, ref)]


def _warm_time(fn, *args, repeats=3):
    """(first call s, median warm s) of ``fn(*args)`` (blocking on the result)."""
    import jax

    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return first, float(np.median(times))


def _centre(im, n=CROP):
    r, c = (im.shape[0] - n) // 2, (im.shape[1] - n) // 2
    return im[r : r + n, c : c + n]


def _summary(psnrs, seconds=None, **extra):
    out = {"psnr": [round(p, 3) for p in psnrs], "mean_psnr": round(float(np.mean(psnrs)), 3)}
    if seconds is not None:
        out["seconds_per_image"] = seconds
    out.update(extra)
    return out


# ---- 1. denoising ----------------------------------------------------------------------------------
def tv_oracle_denoise(noisy, clean, sigma, grid_size):
    import equinox as eqx
    import jax

    import invjax as ij

    tv = ij.functionals.TV(tol=1e-5)
    prox = eqx.filter_jit(jax.vmap(lambda y, w: tv.prox(y, w), in_axes=(0, None)))
    grid = sigma * np.geomspace(0.15, 2.0, grid_size)
    table = np.array([_psnr(prox(noisy, float(w)), clean) for w in grid])  # (grid, images)
    best = table.argmax(axis=0)
    one = eqx.filter_jit(lambda y, w: tv.prox(y, w))
    first, warm = _warm_time(one, noisy[0], float(grid[best[0]]))
    return _summary(table.max(axis=0).tolist(), warm, first_call_s=first,
                    oracle_weight=[float(grid[b]) for b in best], grid=[float(w) for w in grid],
                    at_grid_edge=bool(np.any((best == 0) | (best == len(grid) - 1))))


def bm3d_denoise(noisy, clean, sigma):
    py = _common.ensure_venv("bm3d", BM3D_SPEC)
    with tempfile.TemporaryDirectory() as tmp:
        data, out = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(data, noisy=np.asarray(noisy, np.float64), sigma=np.asarray(sigma))
        proc = subprocess.run([str(py), str(Path(__file__).parent / "peers" / "bm3d_denoise.py"), "--data", str(data),
                               "--out", str(out)], env=_common.peer_env(), capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"bm3d worker failed:\n{proc.stderr[-3000:]}")
        res = np.load(out)
        return _summary(_psnr(res["denoised"].astype(np.float32), clean), float(np.median(res["seconds"])),
                        version=str(res["version"]))


def model_denoise(model, noisy, clean, sigma):
    import equinox as eqx

    out = model.denoise(noisy, sigma)
    one = eqx.filter_jit(lambda m, y: m.denoise(y, sigma))
    first, warm = _warm_time(one, model, noisy[0])
    return _summary(_psnr(out, clean), warm, first_call_s=first)


def section_denoise(models, held, args):
    import jax.numpy as jnp

    clean = jnp.asarray(np.stack(held))
    res = {}
    for level in SIGMAS:
        sigma = level / 255
        rng = np.random.default_rng(1000 + level)
        noisy = jnp.asarray(np.stack(held) + sigma * rng.standard_normal(clean.shape).astype(np.float32))
        row = {"noisy": _summary(_psnr(noisy, clean))}
        _log(f"denoise sigma {level}: TV oracle")
        row["tv_oracle"] = tv_oracle_denoise(noisy, clean, sigma, 7 if args.quick else 15)
        if not args.skip_bm3d:
            _log(f"denoise sigma {level}: BM3D")
            row["bm3d"] = bm3d_denoise(np.asarray(noisy), clean, sigma)
        for name, model in models.items():
            _log(f"denoise sigma {level}: {name}")
            row[name] = model_denoise(model, noisy, clean, sigma)
        res[str(level)] = row
    return res


# ---- 2./3. reconstruction ---------------------------------------------------------------------------
def _problems(kind, crops, seed):
    """(operator, clean (N, n, n), data (N, ...), noise std, TV solver)."""
    import jax.numpy as jnp

    import invjax as ij

    clean = jnp.asarray(np.stack(crops))
    rng = np.random.default_rng(seed)
    if kind == "deblur":
        op = ij.operators.Convolution(ij.operators.gaussian_psf(BLUR_SIZE, BLUR_STD), (CROP, CROP))
        noise = BLUR_NOISE
        tv_solver = ij.solvers.ADMM(max_iters=2000, tol=1e-5)
    else:
        angles = np.linspace(0, np.pi, CT_ANGLES, endpoint=False)
        op = ij.operators.ParallelBeam2D((CROP, CROP), angles)
        noise = CT_NOISE * float(jnp.mean(jnp.abs(op(clean[0]))))
        tv_solver = ij.solvers.PDHG(max_iters=3000, tol=1e-5)
    import jax

    clean_data = jax.vmap(op)(clean)
    data = clean_data + noise * jnp.asarray(rng.standard_normal(clean_data.shape), clean_data.dtype)
    return op, clean, data, noise, tv_solver


def _solve_all(op, data, reg, weight, solver):
    import invjax as ij

    template = ij.Problem(op=op, data=data[0], regularizer=reg, weight=weight)
    sol = ij.solve_batch(template, solver, data=data, devices=None)
    return sol


def _select(score, candidates):
    """The candidate with the best mean PSNR on the selection images, and all the scores."""
    scores = {f"{c:.4g}": float(np.mean(score(c))) for c in candidates}
    best = max(candidates, key=lambda c: scores[f"{c:.4g}"])
    return best, scores


def section_reconstruct(kind, models, held, train, args):
    import invjax as ij

    crops = [_centre(im) for im in held]
    sel = [_centre(im) for im in train[: args.select]]
    op, clean, data, noise, tv_solver = _problems(kind, crops, seed=7 if kind == "deblur" else 8)
    _, sel_clean, sel_data, _, _ = _problems(kind, sel, seed=17 if kind == "deblur" else 18)
    # both problems draw their own noise; the selection images have the same noise level
    res = {"noise_std": noise, "images": len(crops), "selection_images": len(sel)}

    def run(reg, weight, solver, d=data, ref=clean):
        t0 = time.perf_counter()
        sol = _solve_all(op, d, reg, weight, solver)
        out = np.asarray(sol.x)
        return _psnr(out, ref), (time.perf_counter() - t0) / len(d), sol

    # TV at its oracle weight per image, on a grid of two decades around 5 sigma_n^2 (the best
    # weight of the 256^2 deconvolution benchmark, 5e-4 at sigma_n = 0.01, sits at its centre)
    _log(f"{kind}: TV oracle")
    scale = noise**2
    grid = 5 * scale * np.geomspace(0.1, 10, 7 if args.quick else 13)
    table, iters = [], []
    for w in grid:
        p, secs, sol = run(ij.functionals.TV(), float(w), tv_solver)
        table.append(p)
        iters.append(int(np.max(np.asarray(sol.stats.iterations))))
    table = np.array(table)
    best = table.argmax(axis=0)
    res["tv_oracle"] = _summary(table.max(axis=0).tolist(), None, oracle_weight=[float(grid[b]) for b in best],
                                at_grid_edge=bool(np.any((best == 0) | (best == len(grid) - 1))),
                                max_iterations=max(iters))
    for name in ("crr-nn", "wcrr-nn"):
        if name not in models:
            continue
        model = models[name]
        lip = float(model.lipschitz)
        solver = ij.solvers.FISTA(max_iters=3000, tol=1e-5)
        factors = 2.0 ** np.arange(-1, 6) if not args.quick else 2.0 ** np.arange(0, 4)
        _log(f"{kind}: {name} (FISTA, step 1 / (||A||^2 + w L_R)), selecting w on training crops")
        c, scores = _select(lambda c: run(model, c * scale, solver, sel_data, sel_clean)[0], list(factors))
        p, secs, sol = run(model, c * scale, solver)
        step = 1.0 / (float(op.norm()) ** 2 + c * scale * lip)
        res[name] = _summary(p, secs, weight=c * scale, weight_factor=c, selection=scores, step=step,
                             iterations=[int(i) for i in np.asarray(sol.stats.iterations)],
                             converged=bool(np.all(np.asarray(sol.stats.converged))))
    if "dncnn" in models:
        prior = ij.learned.PnP(models["dncnn"])
        levels = [3, 5, 8, 12, 18] if not args.quick else [5, 12]

        def pnp(level, d=data, ref=clean):
            rho = noise**2 / (level / 255) ** 2
            solver = ij.solvers.ADMM(rho=rho, adapt_iters=0, max_iters=args.pnp_iters, tol=1e-4)
            return run(prior, noise**2, solver, d, ref)

        _log(f"{kind}: PnP-DnCNN (ADMM, fixed rho), selecting sigma_d on training crops")
        level, scores = _select(lambda lv: pnp(lv, sel_data, sel_clean)[0], levels)
        p, secs, sol = pnp(level)
        res["pnp_dncnn"] = _summary(p, secs, denoiser_sigma_255=level, selection=scores,
                                    iterations=[int(i) for i in np.asarray(sol.stats.iterations)])
    base = res["tv_oracle"]["mean_psnr"]
    for key in ("crr-nn", "wcrr-nn", "pnp_dncnn"):
        if key in res:
            res[key]["gain_over_tv_oracle_db"] = round(res[key]["mean_psnr"] - base, 3)
    return res


def section_monotone(model, held):
    import jax
    import jax.numpy as jnp

    op, clean, data, noise, _ = _problems("deblur", [_centre(held[0])], seed=7)
    y = data[0]
    w = noise**2
    step = 1.0 / (float(op.norm()) ** 2 + w * float(model.lipschitz))

    def objective(x):
        return 0.5 * jnp.sum((op(x) - y) ** 2) + w * model(x)

    grad = jax.grad(objective)

    @jax.jit
    def run(x0):
        def body(x, _):
            x = x - step * grad(x)
            return x, objective(x)

        return jax.lax.scan(body, x0, None, length=300)[1]

    x0 = op.adjoint(y)
    values = np.asarray(run(x0), np.float64)
    values = np.concatenate([[float(objective(x0))], values])
    increase = float(np.max(np.diff(values)))
    return {"steps": 300, "step": step, "weight": w, "objective_first_last": [values[0], values[-1]],
            "largest_increase": increase, "relative_largest_increase": increase / abs(values[-1]),
            "monotone": bool(increase <= 1e-6 * abs(values[-1]))}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="training folder; its last --held-out images are used")
    ap.add_argument("--held-out", type=int, default=8)
    ap.add_argument("--select", type=int, default=4, help="training images used to choose the learned methods' weights")
    ap.add_argument("--pnp-iters", type=int, default=100)
    ap.add_argument("--skip-bm3d", action="store_true")
    ap.add_argument("--skip", nargs="*", default=[], choices=("denoise", "deblur", "ct", "monotone"))
    ap.add_argument("--quick", action="store_true", help="coarser grids (a smoke run)")
    ap.add_argument("--model-dir", type=Path, default=None,
                    help="load <dir>/<name>.{eqx,json} (ij.learned.save) instead of the shipped models")
    ap.add_argument("--output", type=Path, default=None)
    args = ap.parse_args(argv)

    import jax

    import invjax as ij

    images = ij.learned.load_images(args.data)
    held, train = images[-args.held_out :], images[: -args.held_out]
    if args.model_dir is None:
        models = {name: ij.learned.pretrained(name) for name in MODELS if name in ij.learned.available()}
        info = {name: ij.learned.metadata(name) for name in models}
    else:
        found = [n for n in MODELS if (args.model_dir / f"{n}.json").exists()]
        models = {name: ij.learned.load(args.model_dir / name) for name in found}
        info = {name: json.loads((args.model_dir / f"{name}.json").read_text())["metadata"] for name in found}
    out = {"machine": _common.machine(), "jax": jax.__version__, "held_out_images": len(held),
           "models": {name: {k: v for k, v in meta.items() if k != "calibration"} for name, meta in info.items()}}
    if args.output and args.output.exists() and args.skip:
        # a partial run (--skip) keeps the sections it does not rerun from the file it updates
        kept = json.loads(args.output.read_text())
        out |= {k: kept[k] for k in args.skip if k in kept}
        out["kept_from_previous_run"] = sorted(k for k in args.skip if k in kept)
    t0 = time.perf_counter()

    def save():  # after every section: a long run that is stopped keeps what it measured
        out["wall_s"] = time.perf_counter() - t0
        if args.output:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(out, indent=1))
            _log(f"wrote {args.output}")

    if "denoise" not in args.skip:
        out["denoise"] = section_denoise(models, held, args)
        save()
    for kind in ("deblur", "ct"):
        if kind not in args.skip:
            out[kind] = section_reconstruct(kind, models, held, train, args)
            save()
    if "monotone" not in args.skip and "crr-nn" in models:
        out["monotone"] = section_monotone(models["crr-nn"], held)
    save()
    print(report(out))


def report(out) -> str:
    lines = []
    if "denoise" in out:
        names = [k for k in ("noisy", "tv_oracle", "bm3d", "crr-nn", "wcrr-nn", "dncnn", "ffdnet") if k in out["denoise"]["25"]]
        lines += ["Denoising, held-out mean PSNR (dB) [time per image]", "",
                  "| sigma | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for level, row in out["denoise"].items():
            cells = []
            for n in names:
                s = row[n].get("seconds_per_image")
                cells.append(f"{row[n]['mean_psnr']:.2f}" + (f" [{s * 1e3:.0f} ms]" if s is not None else ""))
            lines.append(f"| {level} | " + " | ".join(cells) + " |")
    for kind in ("deblur", "ct"):
        if kind in out:
            r = out[kind]
            names = [k for k in ("tv_oracle", "crr-nn", "wcrr-nn", "pnp_dncnn") if k in r]
            lines += ["", f"{kind}: held-out mean PSNR (dB), gain over TV(oracle)", "",
                      "| " + " | ".join(names) + " |", "|" + "---|" * len(names),
                      "| " + " | ".join(f"{r[n]['mean_psnr']:.2f}" + (f" ({r[n]['gain_over_tv_oracle_db']:+.2f})"
                                                                      if "gain_over_tv_oracle_db" in r[n] else "")
                                        for n in names) + " |"]
    if "monotone" in out:
        m = out["monotone"]
        lines += ["", f"CRR-NN gradient descent, step {m['step']:.3g}: largest objective increase "
                      f"{m['largest_increase']:.3g} over {m['steps']} steps (monotone: {m['monotone']})"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
