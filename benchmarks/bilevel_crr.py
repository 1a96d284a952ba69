"""Bilevel fine-tuning of CRR-NN for deblurring, through the solver's implicit derivative.

The shipped CRR-NN was trained as a denoiser. Here its filters, splines, strength, scale *and*
the problem's weight are fine-tuned on deblurring: the loss is the reconstruction error of

    x_hat(theta, y) = argmin_x 1/2 ||A x - y||^2 + w R_theta(x)     (FISTA, diff="implicit")

on 64x64 random crops of the training images (Gaussian blur std 1.6 px, noise 0.01, fresh noise
every step), minimised with :func:`invjax.learned.train` and
:func:`invjax.learned.reconstruction_loss` (resumable checkpoints in ``--out``). Reported:

* held-out deblurring PSNR (the 128x128 crops and noise of ``learned_denoise.py``'s deblurring
  section) of the denoising-trained model at its weight chosen on training crops, and of the
  fine-tuned model at its learned weight;
* the cost of one gradient over one solve (the same batch of 4 held-out problems, warm);
* the memory of the compiled gradient for 100 / 400 / 1600 solver iterations, implicit (flat:
  a while loop and one linear solve) against unrolled (``tol=0``: every iteration is stored),
  from XLA's temporary buffers.

Usage::

    python benchmarks/bilevel_crr.py --data ../shared/data/train400 --steps 150 --out runs/bilevel-crr \\
        --output benchmarks/results/bilevel_crr.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
import learned_denoise as ld  # noqa: E402  (the deblurring problems and the selection protocol)

PATCH = 64


def _theta_optimizer(lr, lr_scalar, steps):
    import equinox as eqx
    import jax
    import optax

    def labels(theta):
        lab = jax.tree.map(lambda _: "net", theta)
        return eqx.tree_at(lambda t: (t[0].log_strength, t[0].log_scale, t[1]), lab, ("scalar",) * 3)

    sched = lambda base: optax.cosine_decay_schedule(base, steps, alpha=0.1)  # noqa: E731
    return optax.multi_transform({"net": optax.adam(sched(lr)), "scalar": optax.adam(sched(lr_scalar))}, labels)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--held-out", type=int, default=8)
    ap.add_argument("--select", type=int, default=4)
    ap.add_argument("--model-dir", type=Path, default=None, help="load <dir>/crr-nn instead of the shipped model")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--lr-scalar", type=float, default=1e-2)
    ap.add_argument("--out", type=Path, required=True, help="checkpoint folder (resumable)")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--output", type=Path, default=None)
    args = ap.parse_args(argv)

    import equinox as eqx
    import jax
    import jax.numpy as jnp

    import invjax as ij

    images = ij.learned.load_images(args.data)
    held, train = images[-args.held_out :], images[: -args.held_out]
    model = ij.learned.pretrained("crr-nn") if args.model_dir is None else ij.learned.load(args.model_dir / "crr-nn")
    op, clean, data, noise, _ = ld._problems("deblur", [ld._centre(im) for im in held], seed=7)
    _, sel_clean, sel_data, _, _ = ld._problems("deblur", [ld._centre(im) for im in train[: args.select]], seed=17)
    solver = ij.solvers.FISTA(max_iters=3000, tol=1e-5)
    scale = noise**2

    def psnrs(m, w, d=data, ref=clean):
        return ld._psnr(np.asarray(ld._solve_all(op, d, m, w, solver).x), ref)

    # the denoising-trained model at its weight chosen on training crops (as learned_denoise.py)
    ld._log("before: selecting the weight on training crops")
    factor, scores = ld._select(lambda c: psnrs(model, c * scale, sel_data, sel_clean), list(2.0 ** np.arange(-3, 6)))
    before = psnrs(model, factor * scale)
    out = {"machine": _common.machine(), "jax": jax.__version__,
           "before": {"weight": factor * scale, "selection": scores, "psnr": before, "mean_psnr": float(np.mean(before))}}

    # bilevel fine-tuning on 64x64 training crops
    op64 = ij.operators.Convolution(ij.operators.gaussian_psf(ld.BLUR_SIZE, ld.BLUR_STD), (PATCH, PATCH))
    train_solver = ij.solvers.FISTA(max_iters=2000, tol=1e-4, diff="implicit")
    loss = ij.learned.reconstruction_loss(lambda th, y: ij.Problem(op64, y, th[0], jnp.exp(th[1])), train_solver,
                                          op64, noise)
    theta = (model, jnp.log(jnp.asarray(factor * scale, jnp.float32)))
    data64 = ij.learned.patch_data(train, PATCH, args.batch)
    ld._log(f"bilevel fine-tuning: {args.steps} steps of batch {args.batch} ({PATCH}x{PATCH} crops)")
    t0 = time.perf_counter()
    theta, hist = ij.learned.train(theta, loss, data64, _theta_optimizer(args.lr, args.lr_scalar, args.steps), args.steps,
                                   key=jax.random.PRNGKey(1), checkpoint_dir=args.out, checkpoint_every=25)
    wall = time.perf_counter() - t0
    tuned, w = theta[0], float(jnp.exp(theta[1]))
    after = psnrs(tuned, w)
    out["after"] = {"weight": w, "psnr": after, "mean_psnr": float(np.mean(after)), "steps": args.steps,
                    "batch": args.batch, "wall_s_this_call": wall,
                    "loss": [float(v) for v in hist.loss], "strength": float(tuned.strength), "scale": float(tuned.scale)}
    out["gain_db"] = out["after"]["mean_psnr"] - out["before"]["mean_psnr"]
    ij.learned.save(args.out / "crr-nn-deblur", tuned, {"weight": w, "steps": args.steps})

    # cost: one gradient against one solve, on 4 held-out 128x128 problems
    op128 = op
    batch = jnp.asarray(clean[:4])
    grad_solver = ij.solvers.FISTA(max_iters=3000, tol=1e-4, diff="implicit")
    loss128 = ij.learned.reconstruction_loss(lambda th, y: ij.Problem(op128, y, th[0], jnp.exp(th[1])), grad_solver,
                                             op128, noise)
    key = jax.random.PRNGKey(3)
    f = eqx.filter_jit(lambda th: loss128(th, batch, key))
    g = eqx.filter_jit(eqx.filter_value_and_grad(lambda th: loss128(th, batch, key)))
    _, t_solve = ld._warm_time(f, theta)
    _, t_grad = ld._warm_time(g, theta)
    out["cost"] = {"solve_s": t_solve, "value_and_grad_s": t_grad, "ratio": t_grad / t_solve}

    if not args.skip_memory:
        mem = {}
        for diff in ("implicit", "unroll"):
            for iters in (100, 400, 1600):
                s = ij.solvers.FISTA(max_iters=iters, tol=0.0 if diff == "unroll" else 1e-4, diff=diff)
                lf = ij.learned.reconstruction_loss(lambda th, y: ij.Problem(op128, y, th[0], jnp.exp(th[1])), s,
                                                    op128, noise)
                params, static = eqx.partition(theta, eqx.is_array)
                grad = jax.jit(lambda p, lf=lf: eqx.filter_grad(lambda th: lf(th, batch[:1], key))(eqx.combine(p, static)))
                mem[f"{diff}_{iters}"] = int(grad.lower(params).compile().memory_analysis().temp_size_in_bytes)
        out["memory_temp_bytes"] = mem
    print(json.dumps({k: v for k, v in out.items() if k in ("before", "after", "gain_db", "cost", "memory_temp_bytes")},
                     default=lambda o: None, indent=1)[:3000])
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
