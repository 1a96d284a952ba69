"""TV deconvolution: invjax ADMM/PDHG against SCICO's ADMM and DeepInverse's PGD, on one data set.

Problem (all methods, the same data file)::

    x_true = invjax.phantoms.shepp_logan(256)          (modified Shepp-Logan, values in [0, 1])
    A      = circular convolution with a 9x9 Gaussian PSF, sigma = 2 px, normalised to sum 1
    y      = A x_true + 0.01 n,   n ~ N(0, I)  (jax.random.PRNGKey(0))
    x_hat  = argmin_x 1/2 ||A x - y||^2 + lam TV_iso(x),   lam = LAM below

invjax uses ``TV(isotropic=True, boundary="periodic")``, so that every operator is circulant and
ADMM takes its exact FFT x-step. SCICO uses ``FiniteDifference(circular=True)`` with
``L21Norm`` (periodic isotropic TV: the same objective). DeepInverse's ``TVPrior`` has no
periodic option: its difference leaving the image is 0 (Neumann), a slightly different objective
(the phantom is 0 near the border, so the minimisers differ only there).

Methods:

1. invjax ``ADMM`` and ``PDHG`` with default settings (only ``max_iters`` and ``tol`` set).
2. SCICO 0.0.7 ``scico.optimize.admm.ADMM`` with ``CircularConvolveSolver``, set up as SCICO's
   example ``deconv_circ_tv_admm.py`` (penalty ``rho = 0.5`` from that example), and the same with
   a penalty picked by a sweep on this data (``SCICO_RHO_TUNED``), in ``benchmarks/.venvs/scico``
   (SCICO 0.0.7 pins jax <= 0.8.1), through ``benchmarks/peers/scico_tv.py``.
3. DeepInverse PGD with ``TVPrior`` and ``L2`` set up as its example ``demo_TV_minimisation.py``
   (``TVPrior(n_it_max=20)``, stepsize 1), on the CPU, in ``benchmarks/.venvs/deepinv``, through
   ``benchmarks/peers/deepinv_tv.py``.

Each peer venv is created on first use (minutes) and reused afterwards.

Measurements:

* first call (a fresh process: trace + compile + run; for invjax also split into trace/lower,
  compile and run) and warm time (median over ``--repeats`` runs, at least 3) of 100 iterations
  of every method, and the PSNR reached;
* time to target. The target is 0.1 dB under the best PSNR that any method reaches after 100
  iterations. Each method's PSNR after every iteration comes from a separate instrumented run
  (invjax: ``lax.scan`` over the solver's own ``init``/``step``; SCICO: a ``solve`` callback;
  DeepInverse: a ``custom_metrics`` entry); the smallest iteration count ``k`` whose iterate
  reaches the target is then timed as an ordinary warm run with ``max_iters = k``. A method whose
  trace never reaches the target gets a lower bound (its per-iteration time times the trace
  length);
* invjax ADMM on batches of 8 and 64 images (the same phantom, independent noise): ``jax.vmap``
  on one device, and ``ij.solve_batch`` over 1 and 2 host devices in a subprocess started with
  ``XLA_FLAGS=--xla_force_host_platform_device_count=2``; time per image against one solve;
* gradient cost: ``d MSE(x_hat(lam), x_true) / d lam`` through invjax ADMM with
  ``diff="implicit"`` and ``diff="unroll"`` for ``max_iters`` = 100, 400, 1600, each case in a
  fresh process: first call, warm time, the compiled program's temporary buffer size
  (``jax.jit(f).lower(...).compile().memory_analysis().temp_size_in_bytes``) and the process's
  peak resident memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, before and after).

Timings are wall-clock on a shared 2-core machine: the load (1-minute load average and the busy
fraction of the CPUs just before each block) is recorded next to every number.

Usage::

    python benchmarks/tv_deconvolution.py                 # full run, several minutes
    python benchmarks/tv_deconvolution.py --quick         # shorter traces, fewer cases
    python benchmarks/tv_deconvolution.py --skip-peers    # invjax only (no venvs needed)
    python benchmarks/tv_deconvolution.py --sweep         # the lambda sweep that chose LAM

Writes ``benchmarks/results/tv_deconvolution.{json,md}`` (``--quick``:
``tv_deconvolution_quick.{json,md}``) and prints the markdown tables.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402  (benchmarks/_common.py: machine description, peer venvs)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
CACHE = HERE / ".cache" / "tv_deconvolution"
PEERS = HERE / "peers"

N = 256
PSF_SIZE, PSF_SIGMA = 9, 2.0
NOISE_SIGMA, NOISE_SEED = 0.01, 0
BUDGET = 100  # the fixed iteration budget
TARGET_GAP_DB = 0.1

# Chosen once with `--sweep`: invjax ADMM (default settings, max_iters=2000, tol=1e-5) on this
# data for lam in {2e-5, 5e-5, 1e-4, 2e-4, 3e-4, 4e-4, 5e-4, 6e-4, 7e-4, 8e-4, 1e-3, 2e-3, 5e-3,
# 1e-2, 2e-2}; PSNR peaked at lam = 5e-4 (28.85 dB; 4e-4: 28.83, 6e-4: 28.82, 1e-3: 28.54).
LAM = 5e-4

# SCICO's example deconv_circ_tv_admm.py uses rho = 0.5 (with lam = 2e-2). On this data a sweep of
# rho in {0.5, 0.05, 0.0125, 0.005, 0.002, 0.0005} (PSNR after 100 iterations: 24.52, 26.99,
# 28.52, 28.81, 28.86, 28.78 dB; `--scico-rho-sweep` reruns it) peaked at rho = 0.002.
SCICO_RHO_EXAMPLE = 0.5
SCICO_RHO_TUNED = 0.002

# DeepInverse's example demo_TV_minimisation.py: TVPrior(n_it_max=20), stepsize 1.0.
DEEPINV_INNER_ITERS = 20
DEEPINV_STEPSIZE = 1.0

VENV_SPECS = {
    "scico": {
        "install": [["scico==0.0.7", "jax==0.8.1", "jaxlib==0.8.1"]],
        "check": "import scico, jax; assert scico.__version__ == '0.0.7', scico.__version__",
    },
    "deepinv": {
        # the torch/torchvision pair that imports on these machines (pip takes it from a local
        # disk cache); deepinv pinned to the release this worker was written against
        "install": [["torch==2.14.1", "torchvision==0.29.1"], ["deepinv==0.5.0"]],
        "check": "import torch, deepinv",
    },
}


# ---- small utilities ------------------------------------------------------------------------------


def _log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _busy_fraction(interval=0.5):
    """Fraction of all CPUs busy over ``interval`` seconds (Linux ``/proc/stat``), or None."""
    if not os.path.exists("/proc/stat"):
        return None

    def read():
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
        return sum(fields), fields[3] + fields[4]

    t0, i0 = read()
    time.sleep(interval)
    t1, i1 = read()
    return 1.0 - (i1 - i0) / max(1, t1 - t0)


def _load(wait_idle=0.0, threshold=0.3):
    """Optionally wait (up to ``wait_idle`` s) for the CPUs to quieten; return the load record."""
    start = time.time()
    busy = _busy_fraction()
    while wait_idle > 0 and busy is not None and busy > threshold and time.time() - start < wait_idle:
        busy = _busy_fraction()
    return {"loadavg_1min": round(os.getloadavg()[0], 2), "cpu_busy": None if busy is None else round(busy, 2),
            "waited_s": round(time.time() - start - 0.5, 1)}


def _stats(seconds):
    s = np.asarray(seconds, float)
    return {"median_s": float(np.median(s)), "min_s": float(s.min()), "max_s": float(s.max()), "runs": int(s.size)}


def _proc_status_mib(field):
    """``VmRSS`` / ``VmHWM`` of this process from ``/proc/self/status`` (MiB), or None."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def _reset_peak_rss():
    """Reset this process's peak RSS (``VmHWM``; Linux >= 4.0). Returns whether it worked.

    ``getrusage(...).ru_maxrss`` cannot be used in a subprocess: Linux carries the parent's
    maximum over ``fork`` and keeps it across ``execve``, so a child started from a large
    parent reports the parent's peak."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _cpu_util(fn):
    """Run ``fn``; return (result, wall seconds, process CPU seconds / wall seconds)."""
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t0
    return out, wall, (time.process_time() - c0) / max(wall, 1e-9)


def _distributions():
    from importlib import metadata

    return {d.metadata["Name"]: d.version for d in metadata.distributions()}


_machine = _common.machine


def _invjax_fingerprint():
    h = hashlib.sha256()
    for path in sorted((ROOT / "invjax").rglob("*.py")):
        h.update(path.relative_to(ROOT).as_posix().encode())
        h.update(path.read_bytes())
    out = {"sources_sha256": h.hexdigest()[:16]}
    try:
        out["git_head"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                         text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "invjax"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.splitlines()
        out["uncommitted_invjax_files"] = len(dirty)
    except (OSError, subprocess.CalledProcessError):
        pass
    return out


# ---- the problem ----------------------------------------------------------------------------------


def gaussian_psf(size=PSF_SIZE, sigma=PSF_SIGMA):
    t = np.arange(size) - (size - 1) / 2
    g = np.exp(-(t**2) / (2 * sigma**2))
    psf = np.outer(g, g)
    return (psf / psf.sum()).astype(np.float32)


def make_data(path):
    """Write the shared data file (.npz) and return its arrays."""
    import jax

    import invjax as ij

    x_true = ij.phantoms.shepp_logan(N)
    psf = gaussian_psf()
    A = ij.operators.Convolution(psf, shape=(N, N))
    y_clean = A(x_true)
    y = ij.noise.gaussian(jax.random.PRNGKey(NOISE_SEED), y_clean, NOISE_SIGMA)
    arrays = {"x_true": np.asarray(x_true), "y": np.asarray(y), "y_clean": np.asarray(y_clean), "psf": psf,
              "lam": np.float32(LAM), "noise_sigma": np.float32(NOISE_SIGMA)}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return arrays


def load_problem(path, lam=None):
    import jax.numpy as jnp

    import invjax as ij

    d = np.load(path)
    A = ij.operators.Convolution(jnp.asarray(d["psf"]), shape=(N, N))
    tv = ij.functionals.TV(isotropic=True, boundary="periodic")
    problem = ij.Problem(op=A, data=jnp.asarray(d["y"]), regularizer=tv, weight=float(d["lam"]) if lam is None else lam)
    return problem, jnp.asarray(d["x_true"]), d


def solver_for(name, iters, **kw):
    import invjax as ij

    cls = {"admm": ij.solvers.ADMM, "pdhg": ij.solvers.PDHG}[name]
    return cls(max_iters=iters, **kw)


# ---- invjax measurements (main process) -----------------------------------------------------------


def time_warm(fn, arg, repeats):
    import jax

    jax.block_until_ready(fn(arg))  # compile / warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn(arg))
        times.append(time.perf_counter() - t0)
    return times, out


def invjax_solve_fn(name, iters):
    import jax

    import invjax as ij

    solver = solver_for(name, iters, tol=0.0)  # tol=0: exactly `iters` iterations

    @jax.jit
    def run(problem):
        sol = ij.solve(problem, solver)
        return sol.x, sol.stats.iterations

    return run


def invjax_trace(problem, x_true, name, length):
    """PSNR after each of ``length`` iterations (one compiled scan over the solver's own step)."""
    import jax
    import jax.numpy as jnp

    solver = solver_for(name, length, tol=0.0)
    peak = jnp.max(x_true) - jnp.min(x_true)

    @jax.jit
    def run(p):
        state = solver.init(p, jnp.zeros(p.op.in_shape, p.op.dtype))

        def body(s, _):
            s = solver.step(p, s)
            x = solver.get_x(p, s)
            return s, 10.0 * jnp.log10(peak**2 / jnp.mean((x - x_true) ** 2))

        return jax.lax.scan(body, state, None, length=length)[1]

    return np.asarray(run(problem), float)


def bench_invjax(args, data_path, out):
    import jax

    import invjax as ij

    problem, x_true, _ = load_problem(data_path)
    res = out.setdefault("methods", {})
    for name in ("admm", "pdhg"):
        key = f"invjax_{name}"
        _log(f"invjax {name}: first call in a fresh process")
        first = run_worker("first_call", {"data": str(data_path), "method": name, "iters": BUDGET})
        _log(f"invjax {name}: warm {BUDGET} iterations x {args.repeats}")
        load = _load(args.wait_idle)
        fn = invjax_solve_fn(name, BUDGET)
        times, (x, its) = time_warm(fn, problem, args.repeats)
        psnr = float(ij.metrics.psnr(x, x_true))
        _log(f"invjax {name}: trace of {args.trace[name]} iterations")
        trace = invjax_trace(problem, x_true, name, args.trace[name])
        res[key] = {
            "label": f"invjax {name.upper()} (defaults)",
            "tv_boundary": "periodic",
            "first_call": first,
            "warm": _stats(times),
            "warm_load": load,
            "iterations_run": int(its),
            "psnr": psnr,
            "trace_psnr": trace.tolist(),
            "trace_check_abs_db": abs(float(trace[BUDGET - 1]) - psnr),
        }


def time_invjax_to_target(args, data_path, entry, name, k):
    import invjax as ij

    problem, x_true, _ = load_problem(data_path)
    fn = invjax_solve_fn(name, k)
    load = _load(args.wait_idle)
    repeats = args.repeats if k * entry["warm"]["median_s"] / BUDGET < 5 else 3
    times, (x, _) = time_warm(fn, problem, repeats)
    return {"iters": k, "time": _stats(times), "load": load, "psnr": float(ij.metrics.psnr(x, x_true))}


def time_round_robin(calls, rounds, per_round=None):
    """Interleaved timing, so that load from other processes falls on every contender alike.

    ``calls``: name -> zero-argument callable. Each is called once untimed-for-warm (its wall time
    returned as ``first``: compile + run on a first call), then ``rounds`` rounds call every
    contender in turn (``per_round[name]`` times, default 1). Returns name -> {"first", "times",
    "cpu_util" (process CPU time / wall time over the timed calls), "out"}.
    """
    import jax

    per_round = per_round or {}
    res = {}
    for name, fn in calls.items():
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn())
        res[name] = {"first": time.perf_counter() - t0, "times": [], "cpu": 0.0, "out": out}
    for _ in range(rounds):
        for name, fn in calls.items():
            for _ in range(per_round.get(name, 1)):
                c0, t0 = time.process_time(), time.perf_counter()
                res[name]["out"] = jax.block_until_ready(fn())
                res[name]["times"].append(time.perf_counter() - t0)
                res[name]["cpu"] += time.process_time() - c0
    for r in res.values():
        r["cpu_util"] = r.pop("cpu") / max(sum(r["times"]), 1e-9)
    return res


def bench_batch_vmap(args, data_path, out):
    """``jax.vmap`` of the jitted ADMM solve over batches, timed interleaved with one solve."""
    import jax
    import jax.numpy as jnp

    import invjax as ij

    problem, x_true, d = load_problem(data_path)
    solver = solver_for("admm", BUDGET, tol=0.0)
    single = invjax_solve_fn("admm", BUDGET)

    @jax.jit
    def batched(ys):
        def one(y):
            p = ij.Problem(op=problem.op, data=y, regularizer=problem.regularizer, weight=problem.weight)
            return ij.solve(p, solver).x

        return jax.vmap(one)(ys)

    ys = {b: batch_data(d, b) for b in args.batches}
    calls = {1: lambda: single(problem)[0]}
    calls.update({b: (lambda b=b: batched(ys[b])) for b in args.batches})
    _log(f"batches {list(args.batches)}: vmap on one device, interleaved with single solves")
    load = _load(args.wait_idle)
    res = time_round_robin(calls, rounds=3, per_round={1: 3})
    t_single = float(np.median(res[1]["times"]))
    rows = [{"mode": "single solve (jit)", "devices": 1, "batch": 1, "first_call_s": res[1]["first"],
             "warm": _stats(res[1]["times"]), "per_image_s": t_single, "load": load, "cpu_util": res[1]["cpu_util"]}]
    for b in args.batches:
        r = res[b]
        per = float(np.median(r["times"])) / b
        rows.append({"mode": "jax.vmap (jit)", "devices": 1, "batch": b, "first_call_s": r["first"],
                     "warm": _stats(r["times"]), "per_image_s": per, "per_image_vs_single": per / t_single,
                     "per_image_vs_single_min": min(r["times"]) / b / min(res[1]["times"]), "load": load,
                     "cpu_util": r["cpu_util"],
                     "check_max_abs_diff_vs_single": float(jnp.max(jnp.abs(r["out"][0] - res[1]["out"])))})
    out["batch"] = rows


def batch_data(d, b):
    """``b`` noisy copies of the blurred phantom; image 0 is the benchmark's ``y``."""
    import jax
    import jax.numpy as jnp

    y_clean = jnp.asarray(d["y_clean"])
    keys = jax.random.split(jax.random.PRNGKey(NOISE_SEED + 1), b)
    ys = y_clean[None] + NOISE_SIGMA * jax.vmap(lambda k: jax.random.normal(k, y_clean.shape, y_clean.dtype))(keys)
    return ys.at[0].set(jnp.asarray(d["y"]))


# ---- invjax subprocess workers --------------------------------------------------------------------


def worker_first_call(a):
    """Fresh process: trace/lower, compile and first run of a 100-iteration solve."""
    import jax

    import invjax as ij

    problem, x_true, _ = load_problem(a["data"])
    fn = invjax_solve_fn(a["method"], a["iters"])
    t0 = time.perf_counter()
    lowered = fn.lower(problem)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    x, _ = jax.block_until_ready(compiled(problem))
    t3 = time.perf_counter()
    mem = compiled.memory_analysis()
    return {"first_call_s": t3 - t0, "trace_lower_s": t1 - t0, "compile_s": t2 - t1, "run_s": t3 - t2,
            "temp_mib": None if mem is None else mem.temp_size_in_bytes / 2**20,
            "psnr": float(ij.metrics.psnr(x, x_true))}


def worker_batch_sharded(a):
    """Run with XLA_FLAGS=--xla_force_host_platform_device_count=2: ij.solve_batch on 1 and 2 devices,
    timed interleaved with single solves in the same process."""
    import jax
    import jax.numpy as jnp

    import invjax as ij

    problem, _, d = load_problem(a["data"])
    devices = jax.devices()
    solver = solver_for("admm", BUDGET, tol=0.0)
    single = invjax_solve_fn("admm", BUDGET)
    rows = []
    for b in a["batches"]:
        ys = batch_data(d, b)
        calls = {"single": lambda: single(problem)[0]}
        for devs in ([devices[0]], devices):
            calls[len(devs)] = lambda devs=devs: ij.solve_batch(problem, solver, data=ys, devices=devs).x
        load = _load(a["wait_idle"])
        res = time_round_robin(calls, rounds=3, per_round={"single": 3})
        t_single = float(np.median(res["single"]["times"]))
        rows.append({"mode": f"single solve (jit), 2-device process, with batch {b}", "devices": 1, "batch": 1,
                     "first_call_s": res["single"]["first"], "warm": _stats(res["single"]["times"]),
                     "per_image_s": t_single, "load": load, "cpu_util": res["single"]["cpu_util"]})
        for ndev in (1, len(devices)):
            r = res[ndev]
            per = float(np.median(r["times"])) / b
            rows.append({"mode": "ij.solve_batch", "devices": ndev, "batch": b, "first_call_s": r["first"],
                         "warm": _stats(r["times"]), "per_image_s": per, "load": load, "cpu_util": r["cpu_util"],
                         "per_image_vs_single": per / t_single,
                         "per_image_vs_single_min": min(r["times"]) / b / min(res["single"]["times"]),
                         "output_devices": len(r["out"].sharding.device_set),
                         "check_max_abs_diff_vs_single": float(jnp.max(jnp.abs(r["out"][0] - res["single"]["out"])))})
    return {"device_count": len(devices), "devices": [str(dv) for dv in devices], "rows": rows}


def worker_grad(a):
    """Fresh process: value and d/d lam of MSE(x_hat(lam), x_true) through invjax ADMM."""
    import jax
    import jax.numpy as jnp

    import invjax as ij

    problem, x_true, d = load_problem(a["data"])
    solver = ij.solvers.ADMM(max_iters=a["iters"], diff=a["diff"])  # default tol

    def loss(lam):
        p = ij.Problem(op=problem.op, data=problem.data, regularizer=problem.regularizer, weight=lam)
        return jnp.mean((ij.solve(p, solver).x - x_true) ** 2)

    lam = jnp.asarray(float(d["lam"]), jnp.float32)
    fwd_iters = int(jax.jit(lambda p: ij.solve(p, solver).stats.iterations)(problem))
    vg = jax.jit(jax.value_and_grad(loss))
    rss_before = _proc_status_mib("VmRSS")
    reset = _reset_peak_rss()
    t0 = time.perf_counter()
    lowered = vg.lower(lam)
    compiled = lowered.compile()
    t1 = time.perf_counter()
    peak_compile = _proc_status_mib("VmHWM")
    rss_compiled = _proc_status_mib("VmRSS")
    _reset_peak_rss()
    (value, grad), _, util = _cpu_util(lambda: jax.block_until_ready(compiled(lam)))
    t2 = time.perf_counter()
    times = []
    # an implicit gradient can take minutes: then one warm run (reported as such) is enough
    for _ in range(a["repeats"] if t2 - t0 < 30 else 1):
        s = time.perf_counter()
        jax.block_until_ready(compiled(lam))
        times.append(time.perf_counter() - s)
    peak_run = _proc_status_mib("VmHWM")
    mem = compiled.memory_analysis()
    out = {"diff": a["diff"], "max_iters": a["iters"], "forward_iterations": fwd_iters,
           "compile_s": t1 - t0, "first_call_s": t2 - t0, "warm": _stats(times), "cpu_util_first_run": util,
           "temp_mib": None if mem is None else mem.temp_size_in_bytes / 2**20,
           "peak_reset_worked": reset, "rss_before_mib": rss_before, "peak_rss_compile_mib": peak_compile,
           "rss_after_compile_mib": rss_compiled, "peak_rss_run_mib": peak_run,
           "run_peak_above_compiled_mib": None if peak_run is None else peak_run - rss_compiled,
           "resource_ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
           "value": float(value), "grad": float(grad)}
    if a.get("fd"):
        # central difference of the same loss (float32, so only a rough check)
        f = jax.jit(loss)
        h = 0.02 * float(lam)
        out["grad_central_diff"] = (float(f(lam + h)) - float(f(lam - h))) / (2 * h)
    return out


WORKERS = {"first_call": worker_first_call, "batch_sharded": worker_batch_sharded, "grad": worker_grad}


def run_worker(name, payload, env_extra=None, timeout=1800):
    """Run one of WORKERS in a fresh process of this interpreter; return its JSON result."""
    CACHE.mkdir(parents=True, exist_ok=True)
    out_path = CACHE / f"worker_{name}_{os.getpid()}.json"
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    env.update(env_extra or {})
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--worker-args", json.dumps(payload),
           "--worker-out", str(out_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        # the last line naming an exception says what went wrong; the tail of stderr is often noise
        errors = [ln.strip() for ln in proc.stderr.splitlines() if "Error:" in ln or "Exception:" in ln]
        head = errors[-1] if errors else "see below"
        raise RuntimeError(f"worker {name} failed ({proc.returncode}): {head}\n{proc.stderr[-3000:]}")
    result = json.loads(out_path.read_text())
    out_path.unlink()
    return result


# ---- peers ----------------------------------------------------------------------------------------


def ensure_venv(name):
    """The python of ``benchmarks/.venvs/<name>``, created and installed on first use."""
    return _common.ensure_venv(name, VENV_SPECS[name])


peer_env = _common.peer_env


def run_peer(py, script, data_path, tag, stage, iters, extra, repeats=3, trace_iters=0, timeout=3600):
    out_path = CACHE / f"{tag}_{stage}.json"
    cmd = [str(py), str(PEERS / script), "--data", str(data_path), "--out", str(out_path), "--stage", stage,
           "--iters", str(iters), "--repeats", str(repeats), "--trace-iters", str(trace_iters), *extra]
    proc = subprocess.run(cmd, env=peer_env(), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{script} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(out_path.read_text())


def peer_configs(args):
    dinv_extra = ["--inner-iters", str(DEEPINV_INNER_ITERS), "--stepsize", str(DEEPINV_STEPSIZE)]
    if args.torch_threads:
        dinv_extra += ["--threads", str(args.torch_threads)]
    return [
        {"key": "scico_admm_example", "venv": "scico", "script": "scico_tv.py",
         "label": f"SCICO ADMM, rho={SCICO_RHO_EXAMPLE} (example)", "tv_boundary": "periodic (circular=True)",
         "extra": ["--rho", str(SCICO_RHO_EXAMPLE)], "trace": args.trace["scico"]},
        {"key": "scico_admm_tuned", "venv": "scico", "script": "scico_tv.py",
         "label": f"SCICO ADMM, rho={SCICO_RHO_TUNED} (swept)", "tv_boundary": "periodic (circular=True)",
         "extra": ["--rho", str(SCICO_RHO_TUNED)], "trace": args.trace["scico"]},
        {"key": "deepinv_pgd", "venv": "deepinv", "script": "deepinv_tv.py",
         "label": f"DeepInverse PGD + TVPrior(n_it_max={DEEPINV_INNER_ITERS})", "tv_boundary": "Neumann (zero last difference)",
         "extra": dinv_extra, "trace": args.trace["deepinv"]},
    ]


def bench_peers(args, data_path, out):
    venvs = {}
    for name in VENV_SPECS:
        try:
            venvs[name] = ensure_venv(name)
        except Exception as err:  # noqa: BLE001 - reported, the rest still runs
            out.setdefault("errors", {})[f"venv_{name}"] = str(err)
            _log(f"venv {name} unavailable: {err}")
    for cfg in peer_configs(args):
        if cfg["venv"] not in venvs:
            continue
        _log(f"{cfg['label']}: first call, warm {BUDGET} iterations, trace of {cfg['trace']}")
        load = _load(args.wait_idle)
        try:
            r = run_peer(venvs[cfg["venv"]], cfg["script"], data_path, cfg["key"], "budget", BUDGET, cfg["extra"],
                         repeats=max(3, args.repeats // 2), trace_iters=cfg["trace"])
        except Exception as err:  # noqa: BLE001
            out.setdefault("errors", {})[cfg["key"]] = str(err)
            _log(f"{cfg['key']} failed: {err}")
            continue
        out["methods"][cfg["key"]] = {
            "label": cfg["label"], "tv_boundary": cfg["tv_boundary"], "venv": cfg["venv"], "script": cfg["script"],
            "extra": cfg["extra"], "first_call": {"first_call_s": r["first_call_s"]}, "warm": _stats(r["warm_s"]),
            "warm_load": load, "iterations_run": r["iters"], "psnr": r["psnr"], "trace_psnr": r.get("trace_psnr", []),
            "operator_max_abs_diff": r.get("operator_max_abs_diff"),
            "build": _stats(r["build_s"]) if r.get("build_s") else None,
            "details": {k: v for k, v in r.items() if k not in ("trace_psnr", "warm_s", "distributions")},
        }
        out.setdefault("peer_versions", {})[cfg["venv"]] = r.get("versions")
        out.setdefault("peer_distributions", {})[cfg["venv"]] = r.get("distributions")


def scico_rho_sweep(args, data_path):
    py = ensure_venv("scico")
    rows = []
    for rho in (0.5, 0.05, 0.0125, 0.005, 0.002, 0.0005):
        r = run_peer(py, "scico_tv.py", data_path, f"scico_sweep_{rho}", "budget", BUDGET, ["--rho", str(rho)],
                     repeats=1)
        rows.append((rho, r["psnr"]))
        print(f"rho={rho:<8g} PSNR after {BUDGET} iterations: {r['psnr']:.3f} dB", flush=True)
    return rows


# ---- time to target ---------------------------------------------------------------------------------


def first_reaching(trace, target):
    hits = np.nonzero(np.asarray(trace) >= target)[0]
    return int(hits[0]) + 1 if hits.size else None


def bench_time_to_target(args, data_path, out):
    methods = out["methods"]
    best_key = max(methods, key=lambda k: methods[k]["psnr"])
    target = methods[best_key]["psnr"] - TARGET_GAP_DB
    out["target"] = {"psnr_db": target, "best_psnr_at_budget_db": methods[best_key]["psnr"], "best_method": best_key,
                     "definition": f"{TARGET_GAP_DB} dB under the best PSNR any method reaches in {BUDGET} iterations"}
    venvs = {}
    for key, m in methods.items():
        k = first_reaching(m["trace_psnr"], target)
        per_iter = m["warm"]["median_s"] / BUDGET
        if k is None:
            m["time_to_target"] = {"iters": None, "reached": False, "trace_length": len(m["trace_psnr"]),
                                   "lower_bound_s": per_iter * len(m["trace_psnr"]),
                                   "trace_max_psnr": max(m["trace_psnr"]) if m["trace_psnr"] else None}
            continue
        _log(f"{key}: time to target ({k} iterations)")
        if key.startswith("invjax_"):
            r = time_invjax_to_target(args, data_path, m, key.split("_", 1)[1], k)
        else:
            cfg = next(c for c in peer_configs(args) if c["key"] == key)
            py = venvs.setdefault(cfg["venv"], ensure_venv(cfg["venv"]))
            load = _load(args.wait_idle)
            p = run_peer(py, cfg["script"], data_path, key, "time", k, cfg["extra"], repeats=3)
            r = {"iters": k, "time": _stats(p["warm_s"]), "load": load, "psnr": p["psnr"]}
        r["reached"] = r["psnr"] >= target - 1e-3
        m["time_to_target"] = r


# ---- gradient ---------------------------------------------------------------------------------------


def bench_grad(args, data_path, out):
    rows = []
    for iters in args.grad_iters:
        for diff in ("implicit", "unroll"):
            _log(f"gradient: diff={diff}, max_iters={iters} (fresh process)")
            load = _load(args.wait_idle)
            try:
                r = run_worker("grad", {"data": str(data_path), "diff": diff, "iters": iters, "repeats": 3,
                                        "fd": diff == "implicit" and iters == max(args.grad_iters)})
            except Exception as err:  # noqa: BLE001
                r = {"diff": diff, "max_iters": iters, "error": str(err)[:1500]}
                _log(f"gradient case failed: {err}")
            r["load"] = load
            rows.append(r)
    out["grad"] = rows


# ---- report -----------------------------------------------------------------------------------------


def _fmt(v, nd=3, unit=""):
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    return f"{v:.{nd}f}{unit}"


def _secs(v):
    if v is None:
        return "–"
    return f"{v * 1e3:.1f} ms" if v < 1 else f"{v:.2f} s"


def render_markdown(out):
    L = []
    m = out["machine"]
    L.append("# TV deconvolution benchmark\n")
    L.append(f"256x256 Shepp-Logan (modified), 9x9 Gaussian blur (sigma 2 px, circular), noise sigma {NOISE_SIGMA} "
             f"(PRNGKey({NOISE_SEED})), isotropic TV, lambda = {LAM:g} (chosen by a PSNR sweep with invjax ADMM). "
             f"Measured PSNR of the blurred data: {out['data']['psnr_blurred_db']:.2f} dB.\n")
    L.append(f"Machine: {m.get('cpu_model', '?')}, {m['cpus']} CPUs, {m.get('mem_total_gib', '?')} GiB; "
             f"shared with other jobs (1-min load average {out['load_start']['loadavg_1min']} at the start, "
             f"{out.get('load_end', {}).get('loadavg_1min', '?')} at the end; each timing's load is in the JSON). "
             f"invjax {out['versions']['invjax']} ({out['invjax_fingerprint'].get('git_head', '?')}, "
             f"{out['invjax_fingerprint'].get('uncommitted_invjax_files', '?')} uncommitted files, sources "
             f"{out['invjax_fingerprint']['sources_sha256']}), jax {out['versions']['jax']}"
             + "".join(f"; {venv}: " + ", ".join(f"{k} {v}" for k, v in (vers or {}).items() if k != "python")
                       for venv, vers in out.get("peer_versions", {}).items()) + ".\n")
    if "target" in out:
        t = out["target"]
        L.append(f"Target PSNR: {t['psnr_db']:.3f} dB ({t['definition']}; best: {t['best_method']}, "
                 f"{t['best_psnr_at_budget_db']:.3f} dB). Time to target = warm wall time of a run with the smallest "
                 "iteration count whose iterate reaches the target, the count read off a separate instrumented "
                 "run that records the PSNR after every iteration.\n")
    L.append(f"## Solvers ({BUDGET}-iteration budget)\n")
    L.append("| method | TV boundary | first call (compile + run) | warm, 100 its (median [min–max]) | per iteration | "
             "PSNR @100 (dB) | its to target | time to target |")
    L.append("|---|---|---|---|---|---|---|---|")
    for key, r in out.get("methods", {}).items():
        fc = r["first_call"]
        first = _secs(fc["first_call_s"])
        if "compile_s" in fc:
            first += f" (trace {_secs(fc['trace_lower_s'])}, compile {_secs(fc['compile_s'])}, run {_secs(fc['run_s'])})"
        w = r["warm"]
        warm = f"{_secs(w['median_s'])} [{_secs(w['min_s'])}–{_secs(w['max_s'])}]"
        tt = r.get("time_to_target", {})
        if tt.get("iters"):
            its, ttt = str(tt["iters"]), f"{_secs(tt['time']['median_s'])} (PSNR {tt['psnr']:.3f})"
        elif tt:
            its = f"> {tt['trace_length']}"
            ttt = f"> {_secs(tt['lower_bound_s'])} (max {tt['trace_max_psnr']:.2f} dB in {tt['trace_length']} its)"
        else:
            its = ttt = "–"
        L.append(f"| {r['label']} | {r['tv_boundary']} | {first} | {warm} | {_secs(w['median_s'] / BUDGET)} | "
                 f"{r['psnr']:.3f} | {its} | {ttt} |")
    L.append("")
    notes = [f"{r['label']}: {_secs(r['build']['median_s'])}" for r in out.get("methods", {}).values() if r.get("build")]
    if notes:
        L.append("Peer warm times are the solve call alone; building the solver object before it (per image: "
                 "SCICO's holds the data) is excluded and took (median) " + "; ".join(notes) + ". Their first "
                 "call is build + solve in a fresh process. invjax's warm time is the whole jitted `ij.solve` "
                 "(including its setup: default penalty or steps, operator norms).\n")
    if out.get("reference"):
        ref = out["reference"]
        L.append(f"Reference: one `rfft2` + `irfft2` round trip at 256x256 float32 (jitted): "
                 f"{_secs(ref['fft_roundtrip']['median_s'])} median; DESIGN.md quotes ~0.28 ms for it and "
                 "~0.4 ms per 256x256 TV-ADMM iteration.\n")
    if out.get("batch"):
        L.append(f"## Batches (invjax ADMM, {BUDGET} iterations)\n")
        L.append("Contenders of one process are timed interleaved (3 rounds; single solves 3 times a round); "
                 "\"first call\" is the compile + run of the first call. CPU use = process CPU time / wall time "
                 "over the timed calls (2.0 = both cores). \"per image / single\" divides by the single-solve "
                 "time of the same process (medians; in brackets the ratio of the minima).\n")
        L.append("| mode | devices | batch | first call | warm (median [min–max]) | per image | per image / single "
                 "| CPU use |")
        L.append("|---|---|---|---|---|---|---|---|")
        for r in out["batch"] + out.get("batch_sharded", {}).get("rows", []):
            ratio = r.get("per_image_vs_single")
            w = r["warm"]
            util = r.get("cpu_util")
            rmin = r.get("per_image_vs_single_min")
            ratio_s = "–" if ratio is None else f"{ratio:.2f}x" + ("" if rmin is None else f" (min/min {rmin:.2f}x)")
            L.append(f"| {r['mode']} | {r['devices']} | {r['batch']} | {_secs(r['first_call_s'])} | "
                     f"{_secs(w['median_s'])} [{_secs(w['min_s'])}–{_secs(w['max_s'])}] | {_secs(r['per_image_s'])} | "
                     f"{ratio_s} | {'–' if util is None else f'{util:.2f}'} |")
        L.append("")
    if out.get("grad"):
        L.append("## Gradient d MSE / d lambda through invjax ADMM\n")
        L.append("Each case in a fresh process. XLA temp = `compile().memory_analysis().temp_size_in_bytes` of "
                 "the jitted value-and-grad. RSS from `/proc/self/status`: resident before compiling, the peak "
                 "while compiling (`VmHWM`), and the peak while running (first + warm calls, `VmHWM` reset after "
                 "compiling via `/proc/self/clear_refs`) with its rise over the resident size after compiling. "
                 "(`ru_maxrss` is not usable here: Linux carries the parent's peak into the child.)\n")
        L.append("| diff | max_iters | forward its | first call (compile) | warm (median, runs) | XLA temp | "
                 "RSS before | peak compiling | peak running (rise) | value | d/d lambda |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in out["grad"]:
            if "error" in r:
                L.append(f"| {r['diff']} | {r['max_iters']} | failed: {r['error'].splitlines()[0][:300]} | | | | | | | | |")
                continue
            g = f"{r['grad']:.4g}"
            if "grad_central_diff" in r:
                g += f" (central diff {r['grad_central_diff']:.4g})"
            L.append(f"| {r['diff']} | {r['max_iters']} | {r['forward_iterations']} | {_secs(r['first_call_s'])} "
                     f"({_secs(r['compile_s'])}) | {_secs(r['warm']['median_s'])} ({r['warm']['runs']}) | "
                     f"{r['temp_mib']:.1f} MiB | {r['rss_before_mib']:.0f} MiB | {r['peak_rss_compile_mib']:.0f} MiB | "
                     f"{r['peak_rss_run_mib']:.0f} MiB (+{r['run_peak_above_compiled_mib']:.0f}) | "
                     f"{r['value']:.4g} | {g} |")
        L.append("")
    if out.get("targets"):
        L.append("## Targets\n")
        L.append("| target | measured | met |")
        L.append("|---|---|---|")
        for t in out["targets"]:
            met = {True: "yes", False: "no", None: "n/a"}[t["met"]]
            L.append(f"| {t['target']} | {t['measured']} | {met} |")
        L.append("")
    if out.get("errors"):
        L.append("## Errors\n")
        for k, v in out["errors"].items():
            L.append(f"- {k}: {v[-300:]}")
        L.append("")
    return "\n".join(L)


def evaluate_targets(out):
    rows = []
    methods = out.get("methods", {})
    inv = methods.get("invjax_admm", {})
    inv_ttt = inv.get("time_to_target", {})
    inv_t = inv_ttt["time"]["median_s"] if inv_ttt.get("iters") else None

    def peer_ttt(key):
        tt = methods.get(key, {}).get("time_to_target")
        if not tt:
            return None, None
        if tt.get("iters"):
            return tt["time"]["median_s"], False
        return tt["lower_bound_s"], True

    for key, factor in (("scico_admm_example", 0.05), ("scico_admm_tuned", 0.05), ("deepinv_pgd", 0.01)):
        if key not in methods:
            continue
        t, lower = peer_ttt(key)
        if inv_t is None or t is None:
            rows.append({"target": f"invjax ADMM time-to-target <= {factor}x {methods[key]['label']}",
                         "measured": "not measurable", "met": None})
            continue
        ratio = inv_t / t
        rel = "<=" if lower else "="
        met = ratio <= factor if not lower else (True if ratio <= factor else None)
        rows.append({"target": f"invjax ADMM time-to-target <= {factor}x {methods[key]['label']}",
                     "measured": f"{_secs(inv_t)} vs {'>' if lower else ''}{_secs(t)}: ratio {rel} {ratio:.3f}",
                     "met": met})
    for key in ("invjax_admm", "invjax_pdhg"):
        if key in methods:
            c = methods[key]["first_call"].get("compile_s")
            tl = methods[key]["first_call"].get("trace_lower_s", 0)
            if c is not None:
                rows.append({"target": f"{methods[key]['label']}: compile <= 3 s",
                             "measured": f"trace+lower {_secs(tl)} + compile {_secs(c)} = {_secs(tl + c)} "
                                         f"(first call incl. run {_secs(methods[key]['first_call']['first_call_s'])})",
                             "met": tl + c <= 3.0})
    grads = [g for g in out.get("grad", []) if g.get("diff") == "implicit" and "error" not in g]
    if len(grads) >= 2:
        temps = [g["temp_mib"] for g in grads]
        rss = [g["run_peak_above_compiled_mib"] for g in grads]
        flat = max(temps) <= 1.1 * min(temps) + 0.5
        rows.append({"target": "implicit-gradient memory flat in max_iters",
                     "measured": "XLA temp " + ", ".join(f"{g['max_iters']}: {t:.1f} MiB" for g, t in zip(grads, temps))
                                 + "; RSS rise while running " + ", ".join(f"{g['max_iters']}: {r:.0f} MiB" for g, r in zip(grads, rss)),
                     "met": flat})
    b8 = [r for r in out.get("batch", []) if r["batch"] == 8]
    if b8:
        r = b8[0]
        rows.append({"target": "batch of 8 (vmap, 1 device) no slower per image than one solve",
                     "measured": f"{_secs(r['per_image_s'])} per image vs {_secs(out['batch'][0]['per_image_s'])} "
                                 f"single ({r['per_image_vs_single']:.2f}x; minima {r['per_image_vs_single_min']:.2f}x)",
                     "met": r["per_image_vs_single"] <= 1.0})
    sharded = [r for r in out.get("batch_sharded", {}).get("rows", []) if r["batch"] == 8 and r["devices"] == 2]
    if sharded:
        r = sharded[0]
        rows.append({"target": "batch of 8 (ij.solve_batch, 2 host devices) no slower per image than one solve",
                     "measured": f"{_secs(r['per_image_s'])} per image ({r['per_image_vs_single']:.2f}x single; "
                                 f"minima {r['per_image_vs_single_min']:.2f}x)",
                     "met": r["per_image_vs_single"] <= 1.0})
    out["targets"] = rows


# ---- main -------------------------------------------------------------------------------------------


def lambda_sweep(data_path):
    import jax

    import invjax as ij

    rows = []
    for lam in (2e-5, 5e-5, 1e-4, 2e-4, 3e-4, 4e-4, 5e-4, 6e-4, 7e-4, 8e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2):
        problem, x_true, _ = load_problem(data_path, lam=lam)
        sol = jax.jit(lambda p: ij.solve(p, ij.solvers.ADMM(max_iters=2000, tol=1e-5)))(problem)
        psnr = float(ij.metrics.psnr(sol.x, x_true))
        rows.append((lam, psnr, int(sol.stats.iterations)))
        print(f"lambda={lam:<8g} PSNR {psnr:.3f} dB ({int(sol.stats.iterations)} iterations)", flush=True)
    best = max(rows, key=lambda r: r[1])
    print(f"best lambda: {best[0]:g} ({best[1]:.3f} dB)")
    return rows


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="shorter traces, fewer cases and repeats")
    ap.add_argument("--skip-peers", action="store_true", help="invjax only (no peer venvs)")
    ap.add_argument("--skip-grad", action="store_true", help="skip the gradient section")
    ap.add_argument("--skip-batch", action="store_true", help="skip the batch section")
    ap.add_argument("--repeats", type=int, default=None, help="warm runs per invjax timing (default 5, quick 3)")
    ap.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                    help="before each timing block wait up to SECONDS for the CPUs to be < 30%% busy")
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="torch.set_num_threads for DeepInverse (default 1: on this shared 2-core machine 2 threads "
                         "ran PGD 2-3x slower; 0 keeps torch's default)")
    ap.add_argument("--sweep", action="store_true", help="run the lambda sweep that chose LAM and exit")
    ap.add_argument("--scico-rho-sweep", action="store_true", help="run the SCICO rho sweep and exit")
    ap.add_argument("--output", type=Path, default=None, help="JSON path (markdown next to it)")
    ap.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    ap.add_argument("--worker-args", help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 5
    args.repeats = max(3, args.repeats)
    if args.quick:
        args.trace = {"admm": 300, "pdhg": 1000, "scico": 300, "deepinv": 200}
        args.batches = (8,)
        args.grad_iters = (100, 400)
    else:
        args.trace = {"admm": 1000, "pdhg": 10000, "scico": 2000, "deepinv": 3000}
        args.batches = (8, 64)
        args.grad_iters = (100, 400, 1600)
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        result = WORKERS[args.worker](json.loads(args.worker_args))
        Path(args.worker_out).write_text(json.dumps(result))
        return 0

    import jax
    import jax.numpy as jnp

    import invjax as ij

    t_start = time.time()
    data_path = CACHE / "data.npz"
    arrays = make_data(data_path)
    if args.sweep:
        lambda_sweep(data_path)
        return 0
    if args.scico_rho_sweep:
        scico_rho_sweep(args, data_path)
        return 0

    out = {
        "benchmark": "tv_deconvolution",
        "quick": args.quick,
        "machine": _machine(),
        "load_start": _load(),
        "versions": {"invjax": ij.__version__, "jax": jax.__version__, "jaxlib": getattr(jax.lib, "__version__", None)
                     or _distributions().get("jaxlib"), "python": platform.python_version()},
        "main_distributions": _distributions(),
        "invjax_fingerprint": _invjax_fingerprint(),
        "jax_devices": [str(d) for d in jax.devices()],
        "settings": {"n": N, "psf": f"{PSF_SIZE}x{PSF_SIZE} Gaussian sigma={PSF_SIGMA} normalised, circular",
                     "noise_sigma": NOISE_SIGMA, "noise_key": f"jax.random.PRNGKey({NOISE_SEED})", "lambda": LAM,
                     "budget_iters": BUDGET, "repeats": args.repeats, "traces": args.trace,
                     "wait_idle_s": args.wait_idle, "torch_threads": args.torch_threads,
                     "scico_rho_example": SCICO_RHO_EXAMPLE, "scico_rho_tuned": SCICO_RHO_TUNED,
                     "deepinv_inner_iters": DEEPINV_INNER_ITERS, "deepinv_stepsize": DEEPINV_STEPSIZE},
        "data": {"path": str(data_path.relative_to(ROOT)),
                 "psnr_blurred_db": float(ij.metrics.psnr(jnp.asarray(arrays["y"]), jnp.asarray(arrays["x_true"])))},
        "methods": {},
    }
    out_json = args.output or RESULTS / ("tv_deconvolution_quick.json" if args.quick else "tv_deconvolution.json")

    # reference: one FFT round trip (the floor of an FFT x-step)
    rt = jax.jit(lambda v: jnp.fft.irfft2(jnp.fft.rfft2(v), s=(N, N)))
    ts, _ = time_warm(rt, jnp.asarray(arrays["y"]), 50)
    out["reference"] = {"fft_roundtrip": _stats(ts)}

    bench_invjax(args, data_path, out)
    if not args.skip_peers:
        bench_peers(args, data_path, out)
    bench_time_to_target(args, data_path, out)
    if not args.skip_batch:
        bench_batch_vmap(args, data_path, out)
        _log("batch: ij.solve_batch in a process with 2 host devices")
        try:
            out["batch_sharded"] = run_worker(
                "batch_sharded", {"data": str(data_path), "batches": list(args.batches), "repeats": args.repeats,
                                 "wait_idle": args.wait_idle},
                env_extra={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
        except Exception as err:  # noqa: BLE001
            out.setdefault("errors", {})["batch_sharded"] = str(err)
    if not args.skip_grad:
        bench_grad(args, data_path, out)
    evaluate_targets(out)
    out["load_end"] = _load()
    out["total_wall_s"] = time.time() - t_start

    md = render_markdown(out)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    for m in out.get("methods", {}).values():  # traces: 0.1 mdB is plenty, and keeps the file small
        m["trace_psnr"] = [round(v, 4) for v in m.get("trace_psnr", [])]
    out_json.write_text(json.dumps(out, indent=1))
    out_json.with_suffix(".md").write_text(md + "\n")
    print(md)
    print(f"\nwrote {out_json.relative_to(ROOT) if out_json.is_relative_to(ROOT) else out_json} and .md "
          f"({out['total_wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
