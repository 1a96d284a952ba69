"""Sparse-view CT with learned reconstructions: train (resumable) and evaluate against FBP and TV.

The Adler & Öktem (IEEE TMI 2018) setting at a small size: images ``--size``² (64 by default)
of random ellipses (:func:`invjax.phantoms.random_ellipses`), ``ParallelBeam2D`` with 30
equispaced angles in [0, pi), Gaussian noise of 5 % of the mean absolute sinogram value per
image. Training draws fresh phantoms every step (the data are infinite); evaluation uses
``--test`` held-out phantoms from a key never used in training, and the modified Shepp-Logan.

Stages (``--stage``):

* ``train-lpd``: :class:`invjax.learned.LearnedPrimalDual` (paper defaults: 10 iterations, 5+5
  memory channels, 3 convolutions of 32 filters with PReLU), Adam with cosine decay from
  ``--lr`` over ``--steps``, gradient norm clipped to 1 (the paper's optimiser), checkpoints in
  ``--out/lpd`` every ``--checkpoint-every`` steps; the same command after a kill resumes.
* ``train-deq``: :class:`invjax.learned.DEQ` (the same data, implicit derivative).
* ``evaluate``: FBP; TV at its oracle weight (PDHG to convergence, the best of a weight grid
  per image); CRR-NN (shipped, weight chosen on training phantoms); the trained LPD and DEQ
  (from ``--out``). Writes ``--output`` (JSON, a ``methods`` map name -> {psnr, ssim, seconds})
  after each method and prints a table.

Usage::

    python benchmarks/learned_ct.py --stage train-lpd --steps 3000 --out runs/lpd-ct64
    python benchmarks/learned_ct.py --stage evaluate --out runs/lpd-ct64 \\
        --output benchmarks/results/learned_ct.json

``--size 128 --device gpu`` is the paper's size, for a GPU.
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

ANGLES = 30
NOISE = 0.05  # of the mean |A x| per image (Adler & Öktem)
TRAIN_KEY, VALID_KEY, TEST_KEY = 0, 1, 2  # phantom streams: never shared


def _log(msg):
    print(f"[learned_ct {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def operator(size):
    import invjax as ij

    return ij.operators.ParallelBeam2D((size, size), np.linspace(0, np.pi, ANGLES, endpoint=False))


def phantoms(stream, size, count):
    import jax

    import invjax as ij

    return ij.phantoms.random_ellipses(jax.random.fold_in(jax.random.key(stream), size), size, count)


def validation(op, size, count=16):
    """``validate(model) -> mean PSNR`` on ``count`` fixed validation phantoms."""
    import equinox as eqx
    import jax

    import invjax as ij

    clean = phantoms(VALID_KEY, size, count)
    data = ij.learned.measure(op, clean, NOISE, jax.random.key(11))
    score = eqx.filter_jit(lambda m: jax.numpy.mean(jax.vmap(lambda a, b: ij.metrics.psnr(a, b, data_range=1.0))(
        m(data), clean)))
    return lambda m: float(score(m))


def build(kind, op, args, key):
    import invjax as ij

    if kind == "lpd":
        return ij.learned.LearnedPrimalDual(op, key=key)
    if kind == "deq":
        return ij.learned.DEQ(op, key=key)
    raise ValueError(kind)


def stage_train(kind, args):
    import jax
    import optax

    import invjax as ij

    op = operator(args.size)
    folder = args.out / kind
    folder.mkdir(parents=True, exist_ok=True)
    model = build(kind, op, args, jax.random.key(100))
    schedule = optax.cosine_decay_schedule(args.lr, args.steps)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule, b2=0.99))
    loss = ij.learned.supervised_loss(op, NOISE)
    size, batch = args.size, args.batch

    @jax.jit
    def draw(key):
        return ij.phantoms.random_ellipses(key, size, batch)

    data = lambda key, step: draw(jax.random.fold_in(jax.random.fold_in(key, TRAIN_KEY), step))  # noqa: E731
    validate = validation(op, args.size)
    t0 = time.perf_counter()
    prior = _read_json(folder / "run.json")
    model, hist = ij.learned.train(
        model, loss, data, optimizer, args.steps, key=jax.random.key(1), checkpoint_dir=folder,
        checkpoint_every=args.checkpoint_every, validate=validate, validate_every=args.checkpoint_every,
    )
    wall = time.perf_counter() - t0 + (prior or {}).get("wall_s", 0.0) if prior and prior.get("steps_done", 0) < args.steps else time.perf_counter() - t0
    ij.learned.save(folder / "model", model, {
        "trained_with": f"python benchmarks/learned_ct.py --stage train-{kind} --size {args.size} --steps {args.steps} "
                        f"--batch {args.batch} --lr {args.lr}",
        "steps": args.steps, "batch": args.batch, "wall_s": wall, "machine": _common.machine(),
        "data": f"random_ellipses, {args.size}², {ANGLES} angles, noise {NOISE} x mean|Ax|",
        "validation_psnr": hist.validation.tolist(), "validation_steps": hist.validation_steps.tolist(),
    })
    run = {"kind": kind, "size": args.size, "steps": args.steps, "steps_done": len(hist.loss), "batch": args.batch,
           "lr": args.lr, "wall_s": wall, "machine": _common.machine(),
           "loss": hist.loss.tolist(), "validation_steps": hist.validation_steps.tolist(),
           "validation_psnr": hist.validation.tolist()}
    (folder / "run.json").write_text(json.dumps(run))
    _log(f"{kind}: {len(hist.loss)} steps, validation PSNR {hist.validation[-1]:.2f} dB, wall {wall:.0f} s")


def _read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stage", choices=("train-lpd", "train-deq", "evaluate"), required=True)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--checkpoint-every", type=int, default=100)
    ap.add_argument("--test", type=int, default=100, help="held-out random phantoms")
    ap.add_argument("--out", type=Path, default=Path("runs/lpd-ct64"))
    ap.add_argument("--output", type=Path, default=None)
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.device == "cpu":
        import os

        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    if args.stage.startswith("train-"):
        stage_train(args.stage[6:], args)
    else:
        stage_evaluate(args)


def stage_evaluate(args):
    raise NotImplementedError


if __name__ == "__main__":
    main()
