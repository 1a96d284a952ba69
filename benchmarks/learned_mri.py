"""MoDL against zero-filling and TV at its oracle weight: 4x accelerated Cartesian MRI of brain slices.

Data, no download: axial slices of the MNI152 T1 template that ships inside nilearn
(``invjax.learned.training.mri_data.brain_slices``), split by position into train / validation / test
blocks (5 mm gaps), resized to ``--size``. The ground truth is the real slice in [0, 1];
k-space is ``y = M F (S_c x) + M n`` with complex Gaussian noise ``n`` (``E|n_i|^2 = --noise^2``),
``M`` a 4x variable-density mask of whole phase-encode lines (8 % centre), for one coil and for
``C`` coils with smooth simulated maps (``sum_c |S_c|^2 = 1``). Training draws a new mask and
noise for every image at every step; each held-out slice has one fixed mask and noise draw.

Methods, all on the held-out **test** slices (PSNR and SSIM of the magnitude against the slice,
data range 1; seconds per image warm, compilation excluded):

* ``zero_filled``: ``A^H y`` (coil-combined with the known maps);
* ``tv_oracle``: ``argmin_x 1/2 ||A x - y||^2 + w TV(x)`` (isotropic, complex) by ADMM (CG
  x-steps), ``w`` the best of a log grid **per image** against the ground truth (favours TV);
  the best shared weight is reported too;
* ``modl``: :class:`invjax.learned.MoDL` (the paper's 5-layer 64-filter CNN, ``K`` = 10
  iterations, 10 CG steps each, learned lambda), trained with :func:`invjax.learned.train`
  (Adam, MSE, resumable checkpoints under ``--out``) in the paper's two stages: ``K = 1`` for
  ``--steps-k1`` steps, then ``K`` for ``--steps`` steps from those weights.

The JSON (``--output``) holds a top-level ``methods`` map ``"<method>@<C>coil" -> {psnr, ssim,
seconds}``, ``size``, and per setting the details, learning curves (loss per step, validation
PSNR) and the training budget (steps, wall time, machine). It is written after every section.
Usage::

    python benchmarks/learned_mri.py --out runs/learned_mri                 # the full run
    python benchmarks/learned_mri.py --quick --out /tmp/mri-quick --output /tmp/learned_mri_quick.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402  (benchmarks/_common.py: machine description)

ROOT = Path(__file__).resolve().parent


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


def _stats(values):
    return {"mean": round(float(np.mean(values)), 4), "per_image": [round(float(v), 4) for v in values]}


def _timed(fn, *args, repeats=3):
    """(first call s, median of ``repeats`` warm calls s)."""
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


class Setting:
    """One acquisition setting: the coil maps, the operator for a mask, the simulation."""

    def __init__(self, args, coils):
        import equinox as eqx
        import jax
        import jax.numpy as jnp

        import invjax as ij
        from invjax.learned.training.mri_data import coil_sensitivities, variable_density_mask

        self.n, self.coils, self.noise, self.acc = args.size, coils, args.noise, args.acceleration
        sens = None if coils == 1 else coil_sensitivities(args.size, coils)
        self.template = ij.operators.CartesianMRI(jnp.ones((args.size, args.size)), sensitivities=sens)
        self.mask = lambda key: variable_density_mask(self.n, self.acc, key=key)

        def op_for(mask):
            return eqx.tree_at(lambda o: o.mask, self.template, mask)

        self.op_for = op_for

        @jax.jit
        def simulate(key, x):
            """(masks, k-space) for real images ``x`` ``(B, n, n)``: fresh masks and noise."""
            k_m, k_n = jax.random.split(key)
            masks = jax.vmap(self.mask)(jax.random.split(k_m, x.shape[0]))

            def one(k, xi, m):
                op = op_for(m)
                clean = op.mv(xi.astype(op.dtype))
                kr, ki = jax.random.split(k)
                noise = (self.noise / np.sqrt(2)) * jax.lax.complex(
                    jax.random.normal(kr, clean.shape), jax.random.normal(ki, clean.shape))
                return clean + m * noise

            return masks, jax.vmap(one)(jax.random.split(k_n, x.shape[0]), x, masks)

        self.simulate = simulate

    @property
    def name(self):
        return f"{self.coils}coil"


def _metrics(recon, truth):
    import jax.numpy as jnp

    import invjax as ij

    mag = np.asarray(jnp.abs(recon))
    psnr = [float(ij.metrics.psnr(m, t, data_range=1.0)) for m, t in zip(mag, truth)]
    ssim = [float(ij.metrics.ssim(m, t, data_range=1.0)) for m, t in zip(mag, truth)]
    return psnr, ssim


# ---- the sections ---------------------------------------------------------------------------------
def section_zero_filled(st, test):
    import equinox as eqx
    import jax

    x, masks, y = test
    recon = eqx.filter_jit(jax.vmap(lambda yi, m: st.op_for(m).rmv(yi)))(y, masks)
    psnr, ssim = _metrics(recon, x)
    _, secs = _timed(eqx.filter_jit(lambda yi, m: st.op_for(m).rmv(yi)), y[0], masks[0])
    return {"psnr": _stats(psnr), "ssim": _stats(ssim), "seconds": secs}


def section_tv(st, test, args):
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    import invjax as ij

    x, masks, y = test
    solver = ij.solvers.ADMM(max_iters=args.tv_iters, tol=args.tv_tol)

    def one(w, yi, m):
        problem = ij.Problem(op=st.op_for(m), data=yi, regularizer=ij.functionals.TV(), weight=w)
        sol = ij.solve(problem, solver)
        return sol.x, sol.stats.iterations, sol.stats.converged

    batch = eqx.filter_jit(jax.vmap(one, in_axes=(None, 0, 0)))
    grid = np.geomspace(args.tv_min, args.tv_max, args.tv_grid)
    psnr, ssim, iters, conv = [], [], [], []
    t0 = time.perf_counter()
    for w in grid:
        recon, it, cv = batch(jnp.asarray(w, jnp.float32), y, masks)
        p, s = _metrics(recon, x)
        psnr.append(p)
        ssim.append(s)
        iters.append(np.asarray(it))
        conv.append(np.asarray(cv))
        _log(f"  TV w={w:.3g}: mean PSNR {np.mean(p):.2f} dB, iterations {int(np.max(it))} (max)")
    sweep = time.perf_counter() - t0
    psnr, ssim, iters, conv = map(np.asarray, (psnr, ssim, iters, conv))  # (grid, images)
    best = psnr.argmax(axis=0)
    cols = np.arange(psnr.shape[1])
    shared = int(psnr.mean(axis=1).argmax())
    w_med = float(np.median(grid[best]))
    _, secs = _timed(eqx.filter_jit(one), jnp.asarray(w_med, jnp.float32), y[0], masks[0])
    return {
        "psnr": _stats(psnr[best, cols]), "ssim": _stats(ssim[best, cols]), "seconds": secs,
        "oracle_weight": [float(w) for w in grid[best]],
        "at_grid_edge": bool(np.any((best == 0) | (best == len(grid) - 1))),
        "shared_weight": float(grid[shared]), "shared_weight_psnr": round(float(psnr[shared].mean()), 4),
        "grid": [float(w) for w in grid], "grid_mean_psnr": [round(float(v), 4) for v in psnr.mean(axis=1)],
        "iterations_max": int(iters.max()), "converged_fraction": float(conv[best, cols].mean()),
        "solver": f"ADMM(max_iters={args.tv_iters}, tol={args.tv_tol})", "sweep_seconds": sweep,
    }


def section_modl(st, train_x, val, test, args, key, run_dir):
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import optax

    import invjax as ij
    from invjax.learned.networks.modl import MoDL

    k_model, k_train1, k_train2 = jax.random.split(key, 3)
    model = MoDL(st.template, iterations=args.iterations, cg_iters=args.cg_iters, depth=args.depth,
                 width=args.width, key=k_model)
    n_train = train_x.shape[0]

    @jax.jit
    def draw(key):
        k_i, k_f, k_s = jax.random.split(key, 3)
        x = train_x[jax.random.randint(k_i, (args.batch,), 0, n_train)]
        flip = jax.random.bernoulli(k_f, 0.5, (args.batch, 1, 1))  # up-down flips (the template is
        x = jnp.where(flip, x[:, ::-1, :], x)                       # left-right symmetric already)
        masks, y = st.simulate(k_s, x)
        return {"x": x, "y": y, "mask": masks}

    def loss_for(k):
        def loss(m, batch, _key):
            out = jax.vmap(lambda yi, mi: m(yi, st.op_for(mi), iterations=k))(batch["y"], batch["mask"])
            return jnp.mean(jnp.abs(out - batch["x"]) ** 2)

        return loss

    vx, vmasks, vy = val

    @eqx.filter_jit
    def val_psnr(m, k):
        out = jax.vmap(lambda yi, mi: m(yi, st.op_for(mi), iterations=k))(vy, vmasks)
        mse = jnp.mean((jnp.abs(out) - vx) ** 2, axis=(1, 2))
        return jnp.mean(10 * jnp.log10(1.0 / mse))

    stages = [(1, args.steps_k1, k_train1), (args.iterations, args.steps, k_train2)]
    budget, curves = [], {}
    for k, steps, k_train in stages:
        if steps == 0:
            continue
        folder = run_dir / f"k{k}"
        resumed = (folder / ij.learned.CHECKPOINT_NAME).exists()
        _log(f"  MoDL {st.name}: stage K={k}, {steps} steps, batch {args.batch} ({folder})")
        optimizer = optax.adam(optax.cosine_decay_schedule(args.lr, steps, alpha=0.1))
        calls = []  # time of each step's data draw: steps run in this call and their pace

        def data(key, step):
            calls.append(time.perf_counter())
            return draw(key)

        t0 = time.perf_counter()
        model, hist = ij.learned.train(
            model, loss_for(k), data, optimizer, steps, key=k_train,
            checkpoint_dir=folder, checkpoint_every=args.checkpoint_every,
            validate=lambda m, k=k: float(val_psnr(m, k)), validate_every=args.validate_every,
            progress=not args.no_progress,
        )
        wall = time.perf_counter() - t0
        loss = np.asarray(hist.loss)
        thin = max(1, len(loss) // 1000)
        curves[f"k{k}"] = {"loss_steps": list(range(1, len(loss) + 1))[::thin],
                           "loss": [float(f"{v:.5g}") for v in loss[::thin]],
                           "validation_steps": [int(s) for s in hist.validation_steps],
                           "validation_psnr": [round(float(v), 4) for v in hist.validation]}
        # pace from the second step on (the first compiles), validation and checkpoints included
        pace = (calls[-1] - calls[1]) / (len(calls) - 2) if len(calls) > 2 else None
        budget.append({"iterations": k, "steps": steps, "batch": args.batch, "lr": args.lr, "resumed": resumed,
                       "steps_this_call": len(calls), "wall_s_this_call": round(wall, 1),
                       "s_per_step": None if pace is None else round(pace, 3)})
        _log(f"  stage K={k}: {wall:.0f} s, final validation PSNR "
             f"{hist.validation[-1] if len(hist.validation) else float('nan'):.2f} dB")
    eqx.tree_serialise_leaves(run_dir / "model.eqx", model)

    x, masks, y = test
    recon = eqx.filter_jit(jax.vmap(lambda yi, mi: model(yi, st.op_for(mi))))(y, masks)
    psnr, ssim = _metrics(recon, x)
    _, secs = _timed(eqx.filter_jit(lambda m, yi, mi: m(yi, st.op_for(mi))), model, y[0], masks[0])
    result = {"psnr": _stats(psnr), "ssim": _stats(ssim), "seconds": secs, "lam": float(model.lam),
              "architecture": {"iterations": args.iterations, "cg_iters": args.cg_iters, "depth": args.depth,
                               "width": args.width, "parameters": int(sum(
                                   a.size for a in jax.tree.leaves(eqx.filter(model.denoiser, eqx.is_array))) + 1)}}
    return result, curves, budget


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=64, help="image side n (default 64)")
    ap.add_argument("--coils", type=int, nargs="+", default=[1, 8], help="settings: coil counts (default 1 8)")
    ap.add_argument("--acceleration", type=float, default=4.0)
    ap.add_argument("--noise", type=float, default=0.01, help="complex k-space noise std (images in [0, 1])")
    ap.add_argument("--steps-k1", type=int, default=1000, help="training steps of the K=1 stage")
    ap.add_argument("--steps", type=int, default=300, help="training steps of the K=--iterations stage")
    ap.add_argument("--iterations", type=int, default=10, help="MoDL iterations K (default 10, the paper's)")
    ap.add_argument("--cg-iters", type=int, default=10)
    ap.add_argument("--depth", type=int, default=5)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--checkpoint-every", type=int, default=50)
    ap.add_argument("--validate-every", type=int, default=100)
    ap.add_argument("--tv-grid", type=int, default=13, help="TV weights on a log grid")
    ap.add_argument("--tv-min", type=float, default=1e-4)
    ap.add_argument("--tv-max", type=float, default=3e-2)
    ap.add_argument("--tv-iters", type=int, default=1000)
    ap.add_argument("--tv-tol", type=float, default=1e-4, help="ADMM tolerance (PSNR settled to 0.001 dB by 1e-4)")
    ap.add_argument("--max-test", type=int, default=None, help="use only the first test slices")
    ap.add_argument("--max-validation", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/learned_mri"), help="run folder (checkpoints)")
    ap.add_argument("--output", type=Path, default=ROOT / "results" / "learned_mri.json")
    ap.add_argument("--skip", nargs="*", default=[], choices=("zero_filled", "tv", "modl"))
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: the full-size model, 10 + 3 steps, 2 test and 2 validation slices, 2 TV weights")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps_k1, args.steps = min(args.steps_k1, 10), min(args.steps, 3)
        args.max_test = min(args.max_test or 2, 2)
        args.max_validation = min(args.max_validation or 2, 2)
        args.tv_grid, args.tv_min, args.tv_max, args.tv_iters = 2, 1e-3, 1e-2, 200
        args.checkpoint_every = args.validate_every = 1000  # once, after the last step
    if args.size < 16 or args.batch < 1 or args.steps < 0 or args.steps_k1 < 0 or args.iterations < 1:
        ap.error("--size >= 16, --batch >= 1, --steps/--steps-k1 >= 0 and --iterations >= 1 are required")

    import jax
    import jax.numpy as jnp

    from invjax.learned.training.mri_data import brain_slices

    key = jax.random.PRNGKey(args.seed)
    train_x = brain_slices(args.size, "train")
    val_x = brain_slices(args.size, "validation")[: args.max_validation]
    test_x = brain_slices(args.size, "test")[: args.max_test]
    out = {"size": args.size, "acceleration": args.acceleration, "noise": args.noise, "coils": args.coils,
           "data": {"source": "MNI152 2009a T1 template in nilearn (invjax.learned.training.mri_data.brain_slices)",
                    "train": int(train_x.shape[0]), "validation": int(val_x.shape[0]), "test": int(test_x.shape[0])},
           "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]) if argv is None else " ".join(argv),
           "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
           "machine": _common.machine(), "jax": jax.__version__, "devices": len(jax.local_devices()),
           "methods": {}, "settings": {}}
    t_start = time.perf_counter()

    def save():
        out["wall_s"] = round(time.perf_counter() - t_start, 1)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(out, indent=1))
        _log(f"wrote {args.output}")

    def record(st, name, res):
        out["settings"][st.name]["methods"][name] = res
        out["methods"][f"{name}@{st.name}"] = {"psnr": res["psnr"]["mean"], "ssim": res["ssim"]["mean"],
                                               "seconds": res["seconds"]}
        save()

    for coils in args.coils:
        st = Setting(args, coils)
        k_set = jax.random.fold_in(key, coils)
        k_val, k_test, k_model = jax.random.split(k_set, 3)
        vmasks, vy = st.simulate(k_val, val_x)
        tmasks, ty = st.simulate(k_test, test_x)
        test = (np.asarray(test_x), tmasks, ty)
        out["settings"][st.name] = {"coils": coils, "methods": {}}
        _log(f"{st.name}: {test_x.shape[0]} test slices, {val_x.shape[0]} validation, {train_x.shape[0]} train")
        if "zero_filled" not in args.skip:
            record(st, "zero_filled", section_zero_filled(st, test))
        if "tv" not in args.skip:
            _log(f"{st.name}: TV oracle")
            record(st, "tv_oracle", section_tv(st, test, args))
        if "modl" not in args.skip:
            run_dir = args.out / st.name
            run_dir.mkdir(parents=True, exist_ok=True)
            res, curves, budget = section_modl(st, jnp.asarray(train_x), (val_x, vmasks, vy), test, args, k_model,
                                               run_dir)
            out["settings"][st.name]["learning_curves"] = curves
            out["settings"][st.name]["budget"] = {"stages": budget, "machine": out["machine"]}
            record(st, "modl", res)
        methods = out["settings"][st.name]["methods"]
        if "modl" in methods and "tv_oracle" in methods:
            gain = methods["modl"]["psnr"]["mean"] - methods["tv_oracle"]["psnr"]["mean"]
            out["settings"][st.name]["modl_gain_over_tv_db"] = round(gain, 3)
            save()

    _print_table(out)
    return out


def _print_table(out):
    rows = ["", f"Held-out test slices, {out['size']}x{out['size']}, {out['acceleration']:g}x variable density, "
            f"noise {out['noise']}: mean PSNR (dB) / SSIM / seconds per image", "",
            "| setting | method | PSNR | SSIM | s/image |", "|---|---|---|---|---|"]
    for name, st in out["settings"].items():
        for method, res in st["methods"].items():
            rows.append(f"| {name} | {method} | {res['psnr']['mean']:.2f} | {res['ssim']['mean']:.4f} | "
                        f"{res['seconds']:.4f} |")
        if "modl_gain_over_tv_db" in st:
            rows.append(f"| {name} | MoDL - TV | {st['modl_gain_over_tv_db']:+.2f} | | |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
