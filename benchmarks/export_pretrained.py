"""Ship a trained model as package data: ``invjax/learned/weights/<name>.{eqx,json}``.

Reads a run folder of ``benchmarks/train_denoisers.py`` (``model.eqx``, ``run.json``), rebuilds
the model with the run's settings and saves it with :func:`invjax.learned.save`, recording the
command that reproduces it, the steps, wall time, machine and the held-out validation curve.

For CRR-NN / WCRR-NN it also fits the noise calibration of ``denoise`` (``c(sigma)`` in
``prox_{c sigma^2 R}``): at each level of ``--levels`` (of 255) the factor ``c`` from a grid
(powers of 2^(1/4) between 1/4 and 8; for WCRR-NN only those with ``c sigma^2 rho < 1``) with
the best mean PSNR on ``--calibration-images`` 96x96 centre crops of *training* images (the first of
the folder, never the held-out ones).

Usage::

    python benchmarks/export_pretrained.py --run runs/crr-nn --name crr-nn --data ../shared/data/train400
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_denoisers  # noqa: E402  (the model's structure from the run's settings)

LEVELS = (5, 10, 15, 25, 35, 50)


def _centre(im, n):
    h, w = im.shape
    return im[(h - n) // 2 : (h - n) // 2 + n, (w - n) // 2 : (w - n) // 2 + n]


def calibrate(model, images, levels, seed=0):
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    import invjax as ij

    # centre crops: the top-left corners of train400 are often flat sky, which biased the
    # factors upwards (c(25/255) = 1.41 from corners cost 0.2-0.5 dB on held-out centre crops)
    crops = np.stack([_centre(np.asarray(im), 96) for im in images]).astype(np.float32)
    rng = np.random.default_rng(seed)
    factors = 2.0 ** (np.arange(-8, 13) / 4)  # 1/4 .. 8 (4 hit its old upper end at sigma 5)
    rho = float(model.weak_convexity)
    # one compiled program for every factor and level (the step is an array argument)
    run = eqx.filter_jit(lambda m, ys, step: jax.vmap(lambda y: m.prox(y, step))(ys))
    table, scores = [], {}
    for level in levels:
        sigma = level / 255
        noisy = jnp.asarray(crops + sigma * rng.standard_normal(crops.shape).astype(np.float32))
        best = (-np.inf, None)
        scores[level] = {}
        for c in factors:
            if c * sigma**2 * rho >= 0.99:
                continue
            out = run(model, noisy, jnp.asarray(c * sigma**2, noisy.dtype))
            p = float(np.mean([float(ij.metrics.psnr(o, x, data_range=1.0)) for o, x in zip(out, crops)]))
            scores[level][f"{c:.4g}"] = p
            best = max(best, (p, float(c)))
        if best[1] is None:  # WCRR-NN: no factor keeps c sigma^2 rho < 1, the prox is undefined there
            print(f"  sigma {level:>2}/255: skipped (c sigma^2 rho >= 0.99 for every factor: no prox)")
            scores[level]["skipped"] = "c sigma^2 rho >= 0.99 for every factor"
            continue
        if best[1] in (factors[0], factors[-1]):
            print(f"  sigma {level:>2}/255: the best factor is at the grid's end ({best[1]:.3g})")
        table.append((sigma, best[1]))
        print(f"  sigma {level:>2}/255: factor {best[1]:.3g} ({best[0]:.2f} dB on {len(crops)} training crops)")
    return tuple(table), scores


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, default=None, help="a train_denoisers.py output folder")
    ap.add_argument("--from-shipped", action="store_true",
                    help="CRR/WCRR: re-fit only the noise calibration of the shipped model --name (its weights and "
                         "training record unchanged)")
    ap.add_argument("--name", required=True, help="the shipped name, e.g. crr-nn")
    ap.add_argument("--data", type=Path, default=None, help="the training folder (for the CRR calibration)")
    ap.add_argument("--calibration-images", type=int, default=16)
    ap.add_argument("--levels", type=float, nargs="+", default=list(LEVELS))
    ap.add_argument("--wall-s", type=float, default=None,
                    help="the training wall time when run.json's does not cover it (a run resumed by hand)")
    ap.add_argument("--stages", type=Path, nargs="*", default=[],
                    help="earlier run folders this run was initialised from (--init), in order: their commands, steps "
                         "and wall times are recorded too, and counted in the totals")
    ap.add_argument("--note", default=None, help="a remark kept in the metadata (e.g. how a run was resumed)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "invjax" / "learned" / "weights")
    ap.add_argument("--weights", choices=("best", "last"), default="best",
                    help="the run's best.eqx (best held-out PSNR so far; the default when it exists) or model.eqx")
    ap.add_argument("--only-if-better-than", default=None, metavar="NAME",
                    help="export only if the run's held-out PSNR beats the one recorded for the shipped model NAME "
                         "(e.g. the model it replaces, or itself): the campaign re-exports whenever it improves")
    args = ap.parse_args(argv)

    import equinox as eqx
    import jax

    import invjax as ij

    if args.from_shipped:
        return recalibrate(args)
    if args.run is None:
        ap.error("--run is required (or --from-shipped)")
    run = json.loads((args.run / "run.json").read_text())
    settings = argparse.Namespace(**run.get("args", run.get("config")))
    model, _, _ = train_denoisers.build(settings, jax.random.PRNGKey(0))
    use_best = args.weights == "best" and (args.run / "best.eqx").exists()
    weights_file = args.run / ("best.eqx" if use_best else "model.eqx")
    model = eqx.tree_deserialise_leaves(weights_file, model)
    if use_best:  # the curve up to the exported weights
        run["validation_psnr_exported"] = run["best"]["validation_psnr"]
    held_out = run["best"]["validation_psnr"] if use_best else run["validation_psnr"][-1]
    if args.only_if_better_than is not None:
        shipped = ij.learned.metadata(args.only_if_better_than)
        rival = shipped.get("validation_psnr_exported") or (shipped.get("validation_psnr") or [-np.inf])[-1]
        if not held_out > rival:
            print(f"not exported: held-out PSNR {held_out:.3f} dB does not beat {args.only_if_better_than}'s {rival:.3f} dB")
            return
        print(f"held-out PSNR {held_out:.3f} dB beats {args.only_if_better_than}'s {rival:.3f} dB: exporting")

    def command(r):
        if r.get("segments"):  # the command as typed (train_denoisers records it per segment)
            return "python " + r["segments"][-1]["command"]
        return "python benchmarks/train_denoisers.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in r.get("args", r.get("config")).items() if v is not None
        )

    earlier = [json.loads((d / "run.json").read_text()) for d in args.stages]
    stages = [{"command": command(r), "steps": r["steps"], "wall_s": r["wall_s_total"],
               "validation_psnr": r["validation_psnr"][-1:]} for r in earlier]
    meta = {
        "command": " && ".join([st["command"] for st in stages] + [command(run)]),
        "export_command": "python benchmarks/export_pretrained.py " + " ".join(sys.argv[1:]),
        "stages": stages + [{"command": command(run), "steps": run["steps"], "wall_s": run["wall_s_total"]}],
        "steps": run["steps"] + sum(st["steps"] for st in stages),
        "wall_s": (args.wall_s if args.wall_s is not None else run["wall_s_total"]) + sum(st["wall_s"] for st in stages),
        "machine": run["machine"], "jax": run.get("jax"), "note": args.note,
        "train_images": run["train_images"], "held_out_images": run["held_out_images"],
        "validation_sigma": run["validation_sigma"], "validation_steps": run["validation_steps"],
        "validation_psnr": run["validation_psnr"], "noisy_psnr": run["noisy_psnr"],
        "validation_psnr_exported": held_out, "exported_weights": weights_file.name,
        "segments": run.get("segments", []),
    }
    # one training process pinned to one core: wall time is CPU time
    meta["cpu_hours"] = round(meta["wall_s"] / 3600, 3)
    if isinstance(model, ij.learned.ConvexRidge):
        images = ij.learned.load_images(args.data)[: args.calibration_images]
        table, scores = calibrate(model, images, args.levels)
        model = eqx.tree_deserialise_leaves(args.run / "model.eqx", _with_table(model, table))
        meta["calibration"] = {"levels_255": list(args.levels), "mean_psnr": scores}
    path = ij.learned.save(args.out / args.name, model, meta)
    print(f"wrote {path} and {path.with_suffix('.json')}")


def recalibrate(args):
    """Re-fit the calibration of a shipped CRR/WCRR model; weights and training record kept."""
    import jax

    import invjax as ij

    model = ij.learned.pretrained(args.name)
    meta = dict(ij.learned.metadata(args.name))
    if not isinstance(model, ij.learned.ConvexRidge):
        raise SystemExit(f"--from-shipped: {args.name} is not a ConvexRidge model")
    images = ij.learned.load_images(args.data)[: args.calibration_images]
    table, scores = calibrate(model, images, args.levels)
    # the table is a static field: the same leaves in the structure of a model carrying it
    calibrated = _with_table(model, table)
    model = jax.tree.unflatten(jax.tree.structure(calibrated), jax.tree.leaves(model))
    meta["calibration"] = {"levels_255": list(args.levels), "mean_psnr": scores,
                           "command": "python benchmarks/export_pretrained.py " + " ".join(sys.argv[1:])}
    if args.note:
        meta["note"] = (meta.get("note") or "") + " " + args.note
    path = ij.learned.save(args.out / args.name, model, meta)
    print(f"calibration {table}; wrote {path} and {path.with_suffix('.json')}")


def _with_table(model, table):
    """A ConvexRidge of ``model``'s structure carrying the calibration ``table`` (a static field)."""
    import jax

    import invjax as ij

    return ij.learned.ConvexRidge(
        key=jax.random.PRNGKey(0), channels=model.channels, kernel_size=model.kernel_size, knots=model.spline.knots,
        spline_range=model.spline.spline_range, weakly_convex=model.weakly_convex, prox_tol=model.prox_tol,
        prox_max_iters=model.prox_max_iters, noise_calibration=table,
    )


if __name__ == "__main__":
    main()
