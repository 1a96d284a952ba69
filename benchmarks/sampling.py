"""Posterior sampling (``invjax.sampling``): exactness, SK-ROCK vs MYULA, memory, speed, PnP-ULA.

    python benchmarks/sampling.py --output benchmarks/results/sampling.json [--quick]

Sections (each prints a line and goes into the JSON):

* ``gaussian``: an 8x8 circular blur with a Gaussian prior (``SquaredL2``), float64. The
  posterior is ``N(m, P^{-1})``; long ULA / SK-ROCK runs at their default steps give the
  relative error of the mean and the largest per-pixel relative error of the variance against
  it, beside the variance bias the chain's closed-form stationary law predicts.
* ``tv16``: a 16x16 TV deblurring posterior. Reference: a long proximal MALA run (the
  Moreau-Yosida drift as proposal, Metropolis-Hastings on the exact ``U``, so exact for the
  non-smooth target). MYULA and SK-ROCK (s = 10) at equal gradient budgets: relative errors of
  mean and std against the reference, and effective sample size per gradient evaluation
  (slowest pixel by batch means; the potential's trace by Geyer).
* ``memory``: compiled temporary bytes of a 256x256 TV SK-ROCK run at 1e3 and 1e4 samples.
* ``speed``: 256x256 TV deblurring, time per 1000 samples (MYULA, SK-ROCK s = 10, chain and
  accumulators, after compilation), and a batch of 16 64x64 problems in one vmapped call.
* ``pnp``: 64x64 deblurring with the shipped DnCNN in PnP-ULA: PSNR of the posterior mean
  beside the TV posterior mean (SK-ROCK), and the ratio of the posterior standard deviation on
  edges to that on flat regions.

DeepInverse's ULA/SKRock comparison (the issue's peer timing) is not run here yet.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def _block(tree):
    import jax

    return jax.block_until_ready(tree)


def gaussian_section(quick):
    import jax
    import jax.numpy as jnp
    import numpy as np

    import invjax as ij
    from invjax.sampling.skrock import skrock_coefficients

    jax.config.update("jax_enable_x64", True)
    try:
        n, sigma, w = 8, 0.1, 0.02
        A = ij.operators.Convolution(ij.operators.gaussian_psf(5, 1.0, dtype=jnp.float64), shape=(n, n))
        M = np.asarray(A.as_matrix()).reshape(n * n, n * n)
        rng = np.random.default_rng(0)
        x = rng.normal(0, sigma / np.sqrt(w), n * n)
        y = M @ x + sigma * rng.normal(size=n * n)
        problem = ij.Problem(A, jnp.asarray(y.reshape(n, n)), ij.functionals.SquaredL2(), weight=w)
        H = M.T @ M + w * np.eye(n * n)
        mean = np.linalg.solve(H, M.T @ y)
        P = H / sigma**2
        true_var = np.diag(np.linalg.inv(P))
        ev, U = np.linalg.eigh(P)
        rows = []
        scale = 10 if quick else 1
        for label, sampler, n_samples in [
            ("ULA", ij.sampling.ULA(), 200_000 // scale),
            ("SK-ROCK s=5", ij.sampling.SKROCK(stages=5), 80_000 // scale),
            ("SK-ROCK s=10", ij.sampling.SKROCK(stages=10), 40_000 // scale),
        ]:
            t0 = time.perf_counter()
            post = _block(ij.sampling.sample(problem, sampler, jax.random.PRNGKey(0), sigma=sigma,
                                             n_samples=n_samples, burn_in=1000, n_chains=1))
            secs = time.perf_counter() - t0
            delta = float(post.step_size)
            if label == "ULA":
                c = 1 / (1 - delta * ev / 2)
            else:
                s = int(label.split("=")[1])
                (mu1, nu1, k1), (mu, nu, ka), _ = skrock_coefficients(s, 0.05)
                dp = delta * ev
                a0, b0, a1, b1 = np.ones_like(dp), np.zeros_like(dp), 1 - mu1 * dp, k1 - mu1 * dp * nu1
                for j in range(len(mu)):
                    cj = nu[j] - mu[j] * dp
                    a0, b0, a1, b1 = a1, b1, cj * a1 + ka[j] * a0, cj * b1 + ka[j] * b0
                c = b1**2 * 2 * dp / (1 - a1**2)
            predicted = (U**2) @ (c / ev) / true_var - 1
            m = np.asarray(post.mean).ravel()
            v = np.asarray(post.var).ravel()
            row = {
                "sampler": label, "n_samples": n_samples, "step": delta, "step_times_L": delta * float(ev.max()),
                "mean_rel_error": float(np.linalg.norm(m - mean) / np.linalg.norm(mean)),
                "var_max_rel_error": float(np.max(np.abs(v / true_var - 1))),
                "var_predicted_max_rel_bias": float(np.max(np.abs(predicted))),
                "min_ess": float(np.min(np.asarray(post.ess))),
                "min_ess_per_gradient": float(np.min(np.asarray(post.ess)) / post.gradient_evaluations),
                "seconds": secs,
            }
            rows.append(row)
            print(f"gaussian {label}: mean rel err {row['mean_rel_error']:.2e}, var max rel err "
                  f"{row['var_max_rel_error']:.3f} (predicted bias {row['var_predicted_max_rel_bias']:.3f}), "
                  f"min ESS {row['min_ess']:.0f}", flush=True)
        return {"size": n, "sigma": sigma, "weight": w, "rows": rows}
    finally:
        jax.config.update("jax_enable_x64", False)


def _pmala(problem, sigma, key, n_samples, burn_in, x0):
    """Proximal MALA: the MYULA drift as proposal, Metropolis-Hastings on the exact U
    (so its stationary law is the non-smooth target itself). The step adapts during burn-in
    towards 55 % acceptance and is then frozen."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    from invjax.sampling._target import build_target
    from invjax.sampling.accumulate import moments_init, moments_update, variance

    target = build_target(problem, sigma, "pmala", smooth_only=False, prox_iters=30)
    aux0 = target.init_aux(x0)

    def drift(x, aux):
        g, aux = target.grad(x, aux)
        return g, aux

    def step(carry, t, adapt):
        x, u, g, aux, logd, acc, mom = carry
        d = jnp.exp(logd)
        k1, k2 = jax.random.split(jax.random.fold_in(key, t))
        prop = x - d * g + jnp.sqrt(2 * d) * jax.random.normal(k1, x.shape, x.dtype)
        gp, auxp = drift(prop, aux)
        up = target.potential(prop)
        log_q_fwd = -jnp.sum((prop - x + d * g) ** 2) / (4 * d)
        log_q_bwd = -jnp.sum((x - prop + d * gp) ** 2) / (4 * d)
        log_a = -up + u + log_q_bwd - log_q_fwd
        accept = jnp.log(jax.random.uniform(k2, (), x.dtype)) < log_a
        x, u, g, aux = jax.tree.map(lambda a, b: jnp.where(accept, a, b), (prop, up, gp, auxp), (x, u, g, aux))
        rate = jnp.minimum(1.0, jnp.exp(log_a))
        if adapt:
            logd = logd + 0.05 * (rate - 0.55) * 10.0 / jnp.sqrt(t + 10.0)
        else:
            mom = moments_update(mom, x)
        return (x, u, g, aux, logd, acc + accept, mom), None

    g0, aux0 = drift(x0, aux0)
    carry = (x0, target.potential(x0), g0, aux0, jnp.log(0.5 / target.lipschitz), jnp.zeros((), jnp.int32),
             moments_init(x0))
    carry = lax.fori_loop(0, burn_in, lambda t, c: step(c, t, True)[0], carry)
    acc_burn = carry[5]
    carry = carry[:5] + (jnp.zeros((), jnp.int32), carry[6])
    carry = lax.fori_loop(0, n_samples, lambda t, c: step(c, t + burn_in, False)[0], carry)
    mom = carry[6]
    return mom.mean, variance(mom), carry[5] / n_samples, jnp.exp(carry[4]), acc_burn


def tv16_section(quick):
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpy as np

    import invjax as ij

    n, sigma, w = 16, 0.01, 0.01
    x = jnp.asarray(np.asarray(ij.phantoms.shepp_logan(n)), jnp.float32)
    A = ij.operators.Convolution(ij.operators.gaussian_psf(9, 1.5), shape=(n, n))
    y = ij.noise.gaussian(jax.random.PRNGKey(1), A(x), sigma)
    problem = ij.Problem(A, y, ij.functionals.TV(), weight=w)
    scale = 10 if quick else 1
    t0 = time.perf_counter()
    ref_mean, ref_var, rate, ref_step, _ = _block(eqx.filter_jit(_pmala)(
        problem, jnp.asarray(sigma), jax.random.PRNGKey(2), 200_000 // scale, 20_000 // scale, y))
    ref_secs = time.perf_counter() - t0
    print(f"tv16 reference P-MALA: acceptance {float(rate):.2f}, step {float(ref_step):.2e}, {ref_secs:.0f} s", flush=True)
    budget = 200_000 // scale  # gradient evaluations per sampler
    rows = []
    for label, sampler in [("MYULA", ij.sampling.MYULA()), ("SK-ROCK s=5", ij.sampling.SKROCK(stages=5)),
                           ("SK-ROCK s=10", ij.sampling.SKROCK(stages=10))]:
        per = sampler.stages if label.startswith("SK") else 1
        t0 = time.perf_counter()
        post = _block(ij.sampling.sample(problem, sampler, jax.random.PRNGKey(3), sigma=sigma,
                                         n_samples=budget // per, burn_in=5000 // per))
        secs = time.perf_counter() - t0
        ref_std = np.sqrt(np.asarray(ref_var))
        row = {
            "sampler": label, "n_samples": budget // per, "gradient_evaluations": post.gradient_evaluations,
            "step": float(post.step_size), "smoothing": float(post.smoothing),
            "mean_rel_error": float(jnp.linalg.norm(post.mean - ref_mean) / jnp.linalg.norm(ref_mean)),
            "std_rel_error": float(np.linalg.norm(np.asarray(post.std) - ref_std) / np.linalg.norm(ref_std)),
            "min_ess": float(jnp.min(post.ess)),
            "min_ess_per_gradient": float(jnp.min(post.ess)) / post.gradient_evaluations,
            "potential_ess_per_gradient": float(post.ess_potential) / post.gradient_evaluations,
            "seconds": secs,
        }
        rows.append(row)
        print(f"tv16 {label}: mean rel err {row['mean_rel_error']:.3f}, std rel err {row['std_rel_error']:.3f}, "
              f"min ESS/grad {row['min_ess_per_gradient']:.2e}, U ESS/grad {row['potential_ess_per_gradient']:.2e}",
              flush=True)
    best = max(rows[1:], key=lambda r: r["min_ess_per_gradient"])
    speedup = best["min_ess_per_gradient"] / rows[0]["min_ess_per_gradient"]
    speedup_u = best["potential_ess_per_gradient"] / rows[0]["potential_ess_per_gradient"]
    print(f"tv16 best SK-ROCK ({best['sampler']}) / MYULA ESS per gradient: slowest pixel {speedup:.1f}x, "
          f"potential {speedup_u:.1f}x", flush=True)
    return {"size": n, "sigma": sigma, "weight": w, "reference": {"sampler": "P-MALA", "acceptance": float(rate),
            "step": float(ref_step), "seconds": ref_secs, "n_samples": 200_000 // scale}, "rows": rows,
            "best_skrock": best["sampler"],
            "skrock_over_myula_min_ess_per_gradient": speedup, "skrock_over_myula_potential_ess_per_gradient": speedup_u}


def _deblur_256():
    import jax
    import jax.numpy as jnp
    from skimage import data as skdata
    from skimage.transform import resize

    import invjax as ij

    x = jnp.asarray(resize(skdata.camera() / 255.0, (256, 256), anti_aliasing=True), jnp.float32)
    A = ij.operators.Convolution(ij.operators.gaussian_psf(9, 1.5), shape=(256, 256))
    y = ij.noise.gaussian(jax.random.PRNGKey(0), A(x), 0.01)
    return x, A, y


def memory_section(quick):
    import jax

    import invjax as ij

    _, A, y = _deblur_256()
    problem = ij.Problem(A, y, ij.functionals.TV(), weight=0.01)
    out = {}
    for n in (1000, 10_000):
        for trace in (False, True):
            f = jax.jit(lambda p, k, n=n, trace=trace: ij.sampling.sample(p, ij.sampling.SKROCK(), k, sigma=0.01,
                                                                            n_samples=n, trace=trace).mean)
            mem = f.lower(problem, jax.random.PRNGKey(0)).compile().memory_analysis()
            out[f"temp_bytes_{n}{'_trace' if trace else ''}"] = int(mem.temp_size_in_bytes)
    print(f"memory: temp bytes {out}", flush=True)
    return out


def speed_section(quick):
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    import invjax as ij

    _, A, y = _deblur_256()
    problem = ij.Problem(A, y, ij.functionals.TV(), weight=0.01)
    n = 200 if quick else 1000
    rows = []
    for label, sampler in [("MYULA", ij.sampling.MYULA()), ("SK-ROCK s=10", ij.sampling.SKROCK(stages=10))]:
        run = eqx.filter_jit(lambda p, k, s=sampler: ij.sampling.sample(p, s, k, sigma=0.01, n_samples=n).mean)
        _block(run(problem, jax.random.PRNGKey(0)))
        t0 = time.perf_counter()
        _block(run(problem, jax.random.PRNGKey(1)))
        secs = (time.perf_counter() - t0) * 1000 / n
        rows.append({"sampler": label, "size": 256, "seconds_per_1000_samples": secs})
        print(f"speed 256² {label}: {secs:.2f} s per 1000 samples", flush=True)
    # 16 problems of 64x64 in one call
    xs = jax.random.uniform(jax.random.PRNGKey(5), (16, 64, 64))
    A64 = ij.operators.Convolution(ij.operators.gaussian_psf(9, 1.5), shape=(64, 64))
    ys = jax.vmap(A64)(xs) + 0.01 * jax.random.normal(jax.random.PRNGKey(6), (16, 64, 64))

    def batch(ys, key):
        return jax.vmap(lambda yy, k: ij.sampling.sample(ij.Problem(A64, yy, ij.functionals.TV(), weight=0.01),
                                                         ij.sampling.SKROCK(), k, sigma=0.01, n_samples=n).std)(
            ys, jax.random.split(key, 16))

    run = jax.jit(batch)
    _block(run(ys, jax.random.PRNGKey(0)))
    t0 = time.perf_counter()
    _block(run(ys, jax.random.PRNGKey(1)))
    secs = time.perf_counter() - t0
    print(f"speed: 16 problems of 64² (SK-ROCK, {n} samples each) in one call: {secs:.1f} s", flush=True)
    return {"rows": rows, "n_samples": n, "batch16_64_seconds": secs, "batch16_64_n_samples": n}


def pnp_section(quick):
    import jax
    import jax.numpy as jnp
    import numpy as np
    from skimage import data as skdata
    from skimage.transform import resize

    import invjax as ij

    n, sigma = 64, 0.01
    x = jnp.asarray(resize(skdata.camera() / 255.0, (n, n), anti_aliasing=True), jnp.float32)
    A = ij.operators.Convolution(ij.operators.gaussian_psf(9, 1.5), shape=(n, n))
    y = ij.noise.gaussian(jax.random.PRNGKey(0), A(x), sigma)
    model = ij.learned.pretrained("dncnn")
    steps = 500 if quick else 5000
    eps = 5 / 255
    t0 = time.perf_counter()
    post = _block(ij.sampling.sample(ij.Problem(A, y), ij.sampling.PnPULA(model, noise_level=eps), jax.random.PRNGKey(1),
                                     sigma=sigma, n_samples=steps, burn_in=steps // 5))
    secs = time.perf_counter() - t0
    psnr_pnp = float(ij.metrics.psnr(post.mean, x, data_range=1.0))
    # TV posterior mean at the grid-best weight of a short list
    tv_rows = []
    for w in (0.002, 0.005, 0.01, 0.02):
        tv = _block(ij.sampling.sample(ij.Problem(A, y, ij.functionals.TV(), weight=w), ij.sampling.SKROCK(),
                                       jax.random.PRNGKey(2), sigma=sigma, n_samples=steps // 5, burn_in=steps // 25))
        tv_rows.append({"weight": w, "psnr": float(ij.metrics.psnr(tv.mean, x, data_range=1.0))})
    best_tv = max(tv_rows, key=lambda r: r["psnr"])
    grad = np.hypot(*np.gradient(np.asarray(x)))
    edges = grad > np.quantile(grad, 0.85)
    flat = grad < np.quantile(grad, 0.3)
    std = np.asarray(post.std)
    ratio = float(std[edges].mean() / std[flat].mean())
    print(f"pnp 64²: PnP-ULA (DnCNN, eps 5/255, {steps} samples, {secs:.0f} s) mean PSNR {psnr_pnp:.2f} dB vs TV "
          f"MMSE {best_tv['psnr']:.2f} dB (w = {best_tv['weight']}); std edges / flat {ratio:.2f}", flush=True)
    return {"size": n, "sigma": sigma, "noise_level": eps, "n_samples": steps, "seconds": secs,
            "step": float(post.step_size), "psnr_pnp_mean": psnr_pnp, "tv": tv_rows, "psnr_tv_mean_best": best_tv["psnr"],
            "std_edge_over_flat": ratio, "diverged": bool(np.any(np.asarray(post.diverged)))}


SECTIONS = {"gaussian": gaussian_section, "tv16": tv16_section, "memory": memory_section, "speed": speed_section,
            "pnp": pnp_section}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    ap.add_argument("--quick", action="store_true", help="10x fewer samples (a smoke run)")
    ap.add_argument("--output", type=Path, default=None)
    args = ap.parse_args(argv)
    import jax

    record = {"command": " ".join(["python", "benchmarks/sampling.py"] + (argv if argv is not None else sys.argv[1:])),
              "machine": _common.machine(), "jax": jax.__version__, "quick": args.quick,
              "xla_flags": os.environ.get("XLA_FLAGS", ""),
              "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None}
    if args.output is not None and args.output.exists():
        old = json.loads(args.output.read_text())
        record.update({k: v for k, v in old.items() if k in SECTIONS and k not in args.sections})
    for name in args.sections:
        t0 = time.perf_counter()
        record[name] = SECTIONS[name](args.quick)
        record[name]["section_seconds"] = time.perf_counter() - t0
        record["load_avg"] = os.getloadavg() if hasattr(os, "getloadavg") else None
        if args.output is not None:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(record, indent=1))
    if args.output is not None:
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
