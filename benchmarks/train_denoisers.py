"""Train the learned denoisers that invjax ships (DnCNN, CRR-NN, WCRR-NN): resumable.

Each run trains one model with :func:`invjax.learned.train` on random patches of a folder of
grayscale images (the standard set: ``../shared/data/train400``, 400 crops of 180x180; without
``--data`` the images bundled with scikit-image) and checkpoints to ``--out`` every
``--checkpoint-every`` steps. Running the same command after a kill resumes from the last
checkpoint and ends bit-identical to an uninterrupted run (CPU). The last ``--held-out`` images
of the folder (sorted by name) are never trained on; the validation PSNR is computed on them.

Models:

* ``dncnn``: :class:`invjax.learned.DnCNN` (residual; ``--depth``, ``--width``) with a noise-level
  input, trained on noise levels uniform in ``[0, --sigma-max]`` (of 255), so one network
  serves every level up to it;
* ``crr-nn`` / ``wcrr-nn``: :class:`invjax.learned.ConvexRidge` (convex / weakly convex),
  trained at one level ``--sigma`` (of 255) as the paper's ``t``-step denoiser
  (:meth:`~invjax.learned.ConvexRidge.denoise_unrolled`, ``--tstep`` accelerated gradient steps
  on ``||x - y||^2 / 2 + sigma^2 R(x)``; ``--tstep 0`` trains the exact denoiser ``prox_{sigma^2
  R}`` through its implicit derivative instead, about 10x dearer), validated with the exact
  denoiser. The strength starts at ``--strength / sigma^2``, the scale at ``--scale``; both learn at ``--lr-strength``. WCRR-NN's prox at ``sigma`` exists only while
  ``sigma^2 rho < 1``: a penalty keeps ``sigma^2 rho <= 0.9``. ``--init`` starts from a saved
  model (e.g. a ``t``-step run, to fine-tune with ``--tstep 0``).

Usage::

    python benchmarks/train_denoisers.py --model dncnn --data ../shared/data/train400 \\
        --steps 20000 --out runs/dncnn
    python benchmarks/train_denoisers.py --model crr-nn --data ../shared/data/train400 --out runs/crr-nn

Writes ``<out>/checkpoint.eqx`` (resumable), ``<out>/model.eqx`` (the model alone) and
``<out>/run.json`` (settings, steps, wall time, machine, learning and validation curves).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402  (benchmarks/_common.py: machine description)


def build(args, key):
    import jax.numpy as jnp

    import invjax as ij

    if args.model == "dncnn":
        model = ij.learned.DnCNN(depth=args.depth, width=args.width, noise_level_input=True, key=key)
        loss = ij.learned.denoising_loss((0.0, args.sigma_max / 255))
        return model, loss, lambda m, y, s: m.denoise(y, s)
    if args.model == "ffdnet":
        model = ij.learned.FFDNet(depth=args.depth, width=args.width, key=key)
        loss = ij.learned.denoising_loss((0.0, args.sigma_max / 255))
        return model, loss, lambda m, y, s: m.denoise(y, s)
    sigma = args.sigma / 255
    weakly = args.model == "wcrr-nn"
    model = ij.learned.ConvexRidge(key=key, weakly_convex=weakly, strength=getattr(args, "strength", 1.0) / sigma**2,
                                   scale=getattr(args, "scale", 1.0))

    def loss(m, batch, key):
        import jax

        noisy = batch + sigma * jax.random.normal(key, batch.shape, batch.dtype)
        if args.tstep:
            out = jax.vmap(lambda y: m.denoise_unrolled(y, sigma, args.tstep))(noisy)
        else:
            out = jax.vmap(lambda y: m.denoise(y, sigma))(noisy)
        value = jnp.mean((out - batch) ** 2)
        if weakly:  # keep the denoiser's prox defined: sigma^2 rho <= 0.9
            value = value + jnp.maximum(sigma**2 * m.weak_convexity - 0.9, 0) ** 2
        return value

    return model, loss, lambda m, y, s: m.denoise(y, s)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=("dncnn", "ffdnet", "crr-nn", "wcrr-nn"), required=True)
    ap.add_argument("--data", type=Path, default=None, help="folder of grayscale images (default: scikit-image's)")
    ap.add_argument("--out", type=Path, required=True, help="checkpoint folder")
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--patch", type=int, default=40)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--depth", type=int, default=10)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--sigma", type=float, default=25.0, help="noise level of CRR-NN training (of 255)")
    ap.add_argument("--sigma-max", type=float, default=50.0, help="DnCNN's largest training noise level (of 255)")
    ap.add_argument("--lr-strength", type=float, default=2e-2, help="CRR/WCRR: learning rate of log lambda, log mu")
    ap.add_argument("--lr-spline", type=float, default=1e-2, help="CRR/WCRR: learning rate of the spline slopes")
    ap.add_argument("--strength", type=float, default=5.0, help="CRR/WCRR: initial lambda times sigma^2")
    ap.add_argument("--scale", type=float, default=4.0, help="CRR/WCRR: initial mu")
    ap.add_argument("--tstep", type=int, default=15, help="CRR/WCRR: unrolled denoiser steps (0: exact prox)")
    ap.add_argument("--init", type=Path, default=None, help="start from this saved model (model.eqx of a run)")
    ap.add_argument("--held-out", type=int, default=8, help="images kept out of training (the last by name)")
    ap.add_argument("--checkpoint-every", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--until", type=int, default=None, help="stop this call at this step (the schedule still spans --steps)")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.batch < 1 or args.patch < 8 or args.held_out < 1:
        ap.error("--steps, --batch >= 1, --patch >= 8 and --held-out >= 1 are required")

    import equinox as eqx
    import jax
    import optax

    import invjax as ij

    images = ij.learned.load_images(args.data)
    if len(images) <= args.held_out:
        ap.error(f"--data holds {len(images)} images, not more than --held-out {args.held_out}")
    train_images, held = images[: -args.held_out], images[-args.held_out :]
    key = jax.random.PRNGKey(args.seed)
    k_model, k_train, k_val = jax.random.split(key, 3)
    model, loss, denoise = build(args, k_model)
    if args.init is not None:
        model = eqx.tree_deserialise_leaves(args.init, model)
    # validation at sigma = 25/255 on 128x128 centre crops of the held-out images
    crops = [im[(im.shape[0] - 128) // 2 :, (im.shape[1] - 128) // 2 :][:128, :128] for im in held]
    sigma_val = 25 / 255
    validate = ij.learned.denoising_validation(crops, sigma_val, key=k_val)

    class _Denoiser(eqx.Module):  # model(y, sigma) for the validation helper
        m: object

        def __call__(self, y, s):
            return denoise(self.m, y, s)

    schedule = optax.cosine_decay_schedule(args.lr, args.steps, alpha=0.05)
    optimizer = optax.adam(schedule)
    if args.model not in ("dncnn", "ffdnet"):
        # the strength lambda and the scale mu (logs) and the spline slopes learn with their own,
        # larger rates: with the filters' rate the splines stay near their linear start (no slope
        # had left 1 for 0 after 450 steps, a Wiener-like filter below TV) and the filters grow
        fast = optax.adam(optax.cosine_decay_schedule(args.lr_strength, args.steps, alpha=0.05))

        def labels(params):
            return eqx.tree_at(lambda m: (m.log_strength, m.log_scale, m.spline.raw_slopes),
                               jax.tree.map(lambda _: "net", params), ("scalar", "scalar", "spline"))

        spline = optax.adam(optax.cosine_decay_schedule(args.lr_spline, args.steps, alpha=0.05))
        optimizer = optax.multi_transform({"net": optimizer, "scalar": fast, "spline": spline}, labels)
    data = ij.learned.patch_data(train_images, args.patch, args.batch)
    args.out.mkdir(parents=True, exist_ok=True)
    # the settings that define the run (all but where it is written, how often it checkpoints and
    # when this call stops): resuming with another value of any of them is an error naming it
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
              if k not in ("out", "checkpoint_every", "until", "data")}
    config["data"] = args.data.name if args.data is not None else "scikit-image"
    run_file = args.out / "run.json"
    record = json.loads(run_file.read_text()) if run_file.exists() else {}
    segments = record.get("segments", [])
    until = args.steps if args.until is None else min(args.until, args.steps)
    # train in segments of checkpoint_every steps; after each, run.json records the curve and the
    # accumulated wall time, and best.eqx holds the model with the best held-out PSNR so far
    segment_start, t_call = None, time.time()
    while True:
        t0 = time.time()
        target = min(until, (record.get("steps", 0) // args.checkpoint_every + 1) * args.checkpoint_every)
        model_k, history = ij.learned.train(
            model, loss, data, optimizer, target, key=k_train, checkpoint_dir=args.out,
            checkpoint_every=args.checkpoint_every, validate=lambda m: validate(_Denoiser(m)), config=config,
        )
        wall = time.time() - t0
        done = int(len(history.loss))
        if segment_start is None:
            segment_start = record.get("steps", 0)
        record.update({
            "config": config, "machine": _common.machine(), "jax": jax.__version__,
            "wall_s_total": record.get("wall_s_total", 0.0) + wall, "steps": done,
            "train_images": len(train_images), "held_out_images": len(held),
            "noisy_psnr": validate.noisy_psnr, "validation_sigma": 25,
            "loss": [float(v) for v in np.asarray(history.loss)[:: max(1, len(history.loss) // 500)]],
            "validation_steps": [int(s) for s in history.validation_steps],
            "validation_psnr": [float(v) for v in history.validation],
        })
        val = record["validation_psnr"]
        if val and val[-1] >= max(val):
            eqx.tree_serialise_leaves(args.out / "best.eqx", model_k)
            record["best"] = {"step": record["validation_steps"][-1], "validation_psnr": val[-1]}
        eqx.tree_serialise_leaves(args.out / "model.eqx", model_k)
        record["segments"] = segments + [{"from_step": segment_start, "to_step": done,
                                          "wall_s": time.time() - t_call, "cpu": _common.machine().get("cpu_model"),
                                          "xla_flags": os.environ.get("XLA_FLAGS", ""),
                                          "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                                          "command": " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])}]
        tmp = run_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record, indent=1))
        tmp.replace(run_file)
        print(f"{args.model}: step {done}, {record['wall_s_total']:.0f} s in all; held-out PSNR at sigma 25: "
              f"{val[-1] if val else float('nan'):.2f} dB (noisy {validate.noisy_psnr:.2f} dB)", flush=True)
        if done >= until or wall < 1e-3:
            break
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
