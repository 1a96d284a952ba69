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
    data = ij.learned.measure(op, clean, key=jax.random.key(11), relative_noise=NOISE)
    score = eqx.filter_jit(lambda m: jax.numpy.mean(jax.vmap(lambda a, b: ij.metrics.psnr(a, b, data_range=1.0))(
        jax.vmap(m)(data), clean)))
    return lambda m: float(score(m))


def build(kind, op, args, key):
    import invjax as ij

    if kind == "lpd":
        return ij.learned.LearnedPrimalDual(op, key=key)
    if kind == "deq":  # paper-like: a spectrally normalised CNN, certified contraction 0.95
        return ij.learned.DEQ(op, width=32, depth=5, key=key)
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
    loss = ij.learned.supervised_loss(op, relative_noise=NOISE)
    size, batch = args.size, args.batch

    @jax.jit
    def draw(key):
        return ij.phantoms.random_ellipses(key, size, batch)

    data = lambda key, step: draw(jax.random.fold_in(jax.random.fold_in(key, TRAIN_KEY), step))  # noqa: E731
    validate = validation(op, args.size)
    t0 = time.perf_counter()
    model, hist = ij.learned.train(
        model, loss, data, optimizer, args.steps, key=jax.random.key(1), checkpoint_dir=folder,
        checkpoint_every=args.checkpoint_every, validate=validate, validate_every=args.checkpoint_every,
    )
    wall = time.perf_counter() - t0  # this segment only: a resumed run adds its earlier segments at export
    meta = {
        "trained_with": f"python benchmarks/learned_ct.py --stage train-{kind} --size {args.size} --steps {args.steps} "
                        f"--batch {args.batch} --lr {args.lr}",
        "steps": args.steps, "batch": args.batch, "wall_s": wall, "machine": _common.machine(),
        "data": f"random_ellipses, {args.size}², {ANGLES} angles, noise {NOISE} x mean|Ax|",
        "validation_psnr": hist.validation.tolist(), "validation_steps": hist.validation_steps.tolist(),
    }
    _save(folder / "model", model, meta)
    run = {"kind": kind, "size": args.size, "steps": args.steps, "steps_done": len(hist.loss), "batch": args.batch,
           "lr": args.lr, "wall_s": wall, "machine": _common.machine(),
           "loss": hist.loss.tolist(), "validation_steps": hist.validation_steps.tolist(),
           "validation_psnr": hist.validation.tolist()}
    (folder / "run.json").write_text(json.dumps(run))
    _log(f"{kind}: {len(hist.loss)} steps, validation PSNR {hist.validation[-1]:.2f} dB, wall {wall:.0f} s")


def stage_export(args):
    """Ship the trained LPD as package data: invjax/learned/weights/lpd-ct<size>.{eqx,json}."""
    import invjax as ij

    src = args.out / "lpd" / "model"
    model = ij.learned.load(src)
    meta = json.loads(src.with_suffix(".json").read_text())["metadata"]
    if args.wall_s is not None:
        meta["wall_s"] = args.wall_s
    meta["note"] = args.note
    meta["geometry"] = f"ParallelBeam2D(({args.size}, {args.size}), 30 equispaced angles in [0, pi))"
    meta["exported_with"] = " ".join(["python benchmarks/learned_ct.py"] + sys.argv[1:])
    dest = Path(ij.learned.__file__).parent / "weights" / f"lpd-ct{args.size}"
    ij.learned.save(dest, model, meta)
    _log(f"wrote {dest}.eqx ({dest.with_suffix('.eqx').stat().st_size / 1e6:.2f} MB)")


def _save(path, model, meta):
    """ij.learned.save where it knows the class (LPD); else the leaves and the metadata beside
    them (DEQ: rebuilt by :func:`build` and filled by :func:`_load`)."""
    import equinox as eqx

    import invjax as ij

    try:
        ij.learned.save(path, model, meta)
    except TypeError:
        eqx.tree_serialise_leaves(path.with_suffix(".eqx"), model)
        path.with_suffix(".json").write_text(json.dumps({"metadata": meta}))


def _load(kind, path, op, args):
    import equinox as eqx
    import jax

    import invjax as ij

    if kind == "lpd":
        return ij.learned.load(path)
    return eqx.tree_deserialise_leaves(path.with_suffix(".eqx"), build(kind, op, args, jax.random.key(100)))


def _read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stage", choices=("train-lpd", "train-deq", "evaluate", "export-lpd"), required=True)
    ap.add_argument("--wall-s", type=float, default=None, help="export: total training wall time (resumed runs)")
    ap.add_argument("--note", default="", help="export: a note kept in the shipped model's metadata")
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
    ap.add_argument("--tv-iters", type=int, default=3000)
    ap.add_argument("--speed-size", type=int, default=128)
    ap.add_argument("--methods", nargs="+", default=["fbp", "tv", "crr", "lpd", "deq", "speed"],
                    choices=("fbp", "tv", "crr", "lpd", "deq", "speed"),
                    help="what to (re-)run; the others are kept from an existing --output")
    args = ap.parse_args(argv)
    if args.device == "cpu":
        import os

        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    if args.stage.startswith("train-"):
        stage_train(args.stage[6:], args)
    elif args.stage == "export-lpd":
        stage_export(args)
    else:
        stage_evaluate(args)


def _scores(out, clean):
    import jax

    import invjax as ij

    out = np.asarray(out, np.float32)
    psnr = [float(ij.metrics.psnr(o, c, data_range=1.0)) for o, c in zip(out, np.asarray(clean))]
    ssim = [float(ij.metrics.ssim(o, c, data_range=1.0)) for o, c in zip(out, np.asarray(clean))]
    del jax
    return psnr, ssim


def _entry(out, clean, seconds, **extra):
    psnr, ssim = _scores(out, clean)
    return {"psnr": float(np.mean(psnr)), "ssim": float(np.mean(ssim)), "seconds": seconds,
            "psnr_per_image": [round(p, 3) for p in psnr], **extra}


def _timed(fn, *a):
    """(result, seconds of a second, warm call)."""
    import jax

    jax.block_until_ready(fn(*a))
    t0 = time.perf_counter()
    r = jax.block_until_ready(fn(*a))
    return r, time.perf_counter() - t0


def _solve(op, data, reg, weight, solver, constraint=None):
    import jax.numpy as jnp

    import invjax as ij

    weight = jnp.broadcast_to(jnp.asarray(weight, data.dtype), data.shape[:1])
    template = ij.Problem(op=op, data=data[0], regularizer=reg, weight=1.0, constraint=constraint)
    return ij.solve_batch(template, solver, data=data, weight=weight, devices=None)


def stage_evaluate(args):
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    import invjax as ij

    size = args.size
    op = operator(size)
    count = 8 if args.quick else args.test
    clean = jnp.concatenate([phantoms(TEST_KEY, size, count), ij.phantoms.shepp_logan(size)[None]])
    data = ij.learned.measure(op, clean, key=jax.random.key(22), relative_noise=NOISE)
    res = {"size": size, "angles": ANGLES, "noise": f"{NOISE} x mean|Ax| per image", "test_phantoms": count,
           "machine": _common.machine(), "jax": jax.__version__, "methods": {}, "shepp_logan": {}}
    old = _read_json(args.output) if args.output else None
    if old and old.get("size") == size and old.get("test_phantoms") == count:  # keep what is not re-run
        res["methods"], res["shepp_logan"] = old.get("methods", {}), old.get("shepp_logan", {})
        if "speed" in old:
            res["speed"] = old["speed"]
    run = set(args.methods)
    t_all = time.perf_counter()

    def record(name, out, seconds, **extra):
        e = _entry(out[:count], clean[:count], seconds, **extra)
        sl_psnr, sl_ssim = _scores(out[count:], clean[count:])
        res["methods"][name] = e
        res["shepp_logan"][name] = {"psnr": sl_psnr[0], "ssim": sl_ssim[0]}
        res["wall_s"] = time.perf_counter() - t_all
        _log(f"{name}: {e['psnr']:.2f} dB, SSIM {e['ssim']:.3f}, Shepp-Logan {sl_psnr[0]:.2f} dB [{seconds:.3g} s/image]")
        if args.output:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(res, indent=1))

    if "fbp" in run:
        fbp = jax.jit(jax.vmap(lambda y: ij.operators.fbp(op, y)))
        out, secs = _timed(fbp, data)
        record("fbp", out, secs / len(data))
    if "tv" in run:
        tv_oracle(op, clean, data, count, record, args)
    if "crr" in run and "crr-nn" in ij.learned.available():
        crr_nn(op, clean, data, count, record, args)

    for kind in ("lpd", "deq"):
        path = args.out / kind / "model"
        if kind not in run:
            continue
        if not path.with_suffix(".json").exists():
            _log(f"{kind}: no trained model at {path}")
            continue
        net = _load(kind, path, op, args)
        call = eqx.filter_jit(lambda m, y: jax.vmap(m)(y))
        out, secs = _timed(call, net, data)
        meta = json.loads(path.with_suffix(".json").read_text())["metadata"]
        record(kind, out, secs / len(data), training={k: meta[k] for k in ("steps", "batch", "wall_s", "trained_with")
                                                        if k in meta})
    tv_psnr = res["methods"].get("tv_oracle", {}).get("psnr")
    for name, e in res["methods"].items():
        if tv_psnr is not None:
            e["gain_over_tv_oracle_db"] = round(e["psnr"] - tv_psnr, 3)
    if "speed" in run:
        res["speed"] = speed(args)
    res["wall_s"] = time.perf_counter() - t_all
    if args.output:
        args.output.write_text(json.dumps(res, indent=1))
    print(report(res))


def tv_oracle(op, clean, data, count, record, args):
    import jax
    import jax.numpy as jnp

    import invjax as ij

    # TV, PDHG to convergence; the oracle weight: the best mean PSNR over a grid on the first
    # `sel` test phantoms (the ground truth decides: an oracle), then all images at that weight
    noise = NOISE * float(jnp.mean(jnp.abs(jax.vmap(op)(clean[:count]))))
    tv_solver = ij.solvers.PDHG(max_iters=args.tv_iters, tol=1e-5)
    sel = min(count, 8 if args.quick else 20)
    grid = noise**2 * np.geomspace(0.3, 30, 5 if args.quick else 9)
    table = []
    for w in grid:
        sol = _solve(op, data[:sel], ij.functionals.TV(), w, tv_solver, ij.functionals.NonNegative())
        table.append(_scores(sol.x, clean[:sel])[0])
        _log(f"TV weight {w:.3g}: {np.mean(table[-1]):.2f} dB (max iterations {int(np.max(sol.stats.iterations))})")
    table = np.array(table)
    best = float(grid[int(np.argmax(table.mean(axis=1)))])
    t0 = time.perf_counter()
    sol = _solve(op, data, ij.functionals.TV(), best, tv_solver, ij.functionals.NonNegative())
    out = np.asarray(sol.x)
    secs = (time.perf_counter() - t0) / len(data)
    record("tv_oracle", out, secs, weight=best, grid=grid.tolist(), grid_mean_psnr=table.mean(axis=1).tolist(),
           per_image_oracle_psnr_on_selection=float(table.max(axis=0).mean()), selection_images=sel,
           at_grid_edge=bool(best in (grid[0], grid[-1])),
           iterations=int(np.max(sol.stats.iterations)),
           converged=bool(np.all(np.asarray(sol.stats.converged))), solver="PDHG, nonnegativity, tol 1e-5")


def crr_nn(op, clean, data, count, record, args):
    """CRR-NN (shipped, trained on natural images) as the regulariser, FISTA to convergence,
    the weight chosen on training phantoms."""
    import jax
    import jax.numpy as jnp

    import invjax as ij

    size = args.size
    noise = NOISE * float(jnp.mean(jnp.abs(jax.vmap(op)(clean[:count]))))
    crr = ij.learned.pretrained("crr-nn")
    train_clean = phantoms(TRAIN_KEY, size, 4)
    train_data = ij.learned.measure(op, train_clean, key=jax.random.key(33), relative_noise=NOISE)
    solver = ij.solvers.FISTA(max_iters=args.tv_iters, tol=1e-5)
    factors = noise**2 * np.geomspace(0.25, 16, 5 if args.quick else 7)
    scores = {}
    for w in factors:
        sol = _solve(op, train_data, crr, w, solver, ij.functionals.NonNegative())
        scores[float(w)] = float(np.mean(_scores(sol.x, train_clean)[0]))
        _log(f"CRR-NN weight {w:.3g}: {scores[float(w)]:.2f} dB on training phantoms")
    w = max(scores, key=scores.get)
    t0 = time.perf_counter()
    sol = _solve(op, data, crr, w, solver, ij.functionals.NonNegative())
    out = np.asarray(sol.x)
    record("crr-nn", out, (time.perf_counter() - t0) / len(data), weight=w, selection=scores,
           iterations=int(np.max(sol.stats.iterations)), converged=bool(np.all(np.asarray(sol.stats.converged))))


def speed(args):
    """At --speed-size (128): one LPD forward pass vs one converged TV-PDHG reconstruction, and
    a vmapped batch of 16 sinograms in one call (the weights do not change the cost: the shipped
    64² network is applied with the 128² operator)."""
    import equinox as eqx
    import jax

    import invjax as ij

    n = args.speed_size
    op = operator(n)
    path = args.out / "lpd" / "model"
    net = ij.learned.load(path) if path.with_suffix(".json").exists() else ij.learned.LearnedPrimalDual(
        operator(args.size), key=jax.random.key(0))
    net = net.with_operator(op)
    x = ij.phantoms.shepp_logan(n)
    y = ij.learned.measure(op, x[None], key=jax.random.key(5), relative_noise=NOISE)
    call = eqx.filter_jit(lambda m, y: m(y))
    _, one = _timed(call, net, y[0])
    ys = ij.learned.measure(op, ij.phantoms.random_ellipses(jax.random.key(6), n, 16), key=jax.random.key(7), relative_noise=NOISE)
    _, sixteen = _timed(call, net, ys)
    noise = NOISE * float(jax.numpy.mean(jax.numpy.abs(op(x))))
    problem = ij.Problem(op=op, data=y[0], regularizer=ij.functionals.TV(), weight=3 * noise**2,
                         constraint=ij.functionals.NonNegative())
    solver = ij.solvers.PDHG(max_iters=args.tv_iters, tol=1e-5)
    solve = eqx.filter_jit(lambda p: ij.solve(p, solver))
    sol, tv = _timed(solve, problem)
    out = {"size": n, "lpd_forward_s": one, "lpd_batch16_s": sixteen, "lpd_batch16_per_image_s": sixteen / 16,
           "tv_pdhg_s": tv, "tv_iterations": int(sol.stats.iterations), "tv_converged": bool(sol.stats.converged),
           "lpd_over_tv": one / tv}
    _log(f"speed {n}²: LPD {one * 1e3:.1f} ms, batch 16 {sixteen * 1e3:.1f} ms, TV-PDHG {tv * 1e3:.0f} ms "
         f"({out['tv_iterations']} its): ratio {one / tv:.3f}")
    return out


def report(res) -> str:
    lines = [f"Sparse-view CT {res['size']}², {res['angles']} angles, noise {res['noise']}; "
             f"{res['test_phantoms']} held-out random-ellipse phantoms (mean) and Shepp-Logan", "",
             "| method | PSNR | SSIM | gain over TV | Shepp-Logan PSNR | s/image |", "|---|---|---|---|---|---|"]
    for name, e in res["methods"].items():
        lines.append(f"| {name} | {e['psnr']:.2f} | {e['ssim']:.3f} | {e.get('gain_over_tv_oracle_db', 0):+.2f} | "
                     f"{res['shepp_logan'][name]['psnr']:.2f} | {e['seconds']:.3g} |")
    if "speed" in res:
        s = res["speed"]
        lines += ["", f"Speed at {s['size']}²: LPD forward {s['lpd_forward_s'] * 1e3:.1f} ms, batch of 16 in one call "
                      f"{s['lpd_batch16_s'] * 1e3:.1f} ms; TV-PDHG ({s['tv_iterations']} its) {s['tv_pdhg_s'] * 1e3:.0f} ms; "
                      f"LPD / TV = {s['lpd_over_tv']:.3f}"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
