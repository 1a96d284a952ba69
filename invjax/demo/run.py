"""``invjax demo``: reconstruct each task with every method, print the table, write PNG, NPZ and JSON."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .. import learned, solvers
from ..solvers import Problem, solve
from . import report, sweep, tasks

DEFAULT_SIZE = 64
"""The demo's default image side in pixels (``size`` of :func:`run_demo`, ``--size`` of
``invjax demo``): 64x64, the size the shipped learned primal-dual ``lpd-ct64`` was trained for."""
MIN_SIZE = 16
"""The smallest image side :func:`run_demo` accepts (a smaller ``size`` raises ``ValueError``)."""
TARGET_GAP_DB = 0.5
LPD_NAME = "lpd-ct64"
LEARNED = ("CRR-NN", "PnP-DnCNN", "learned primal-dual")


# CPU seconds of each task at 64x64 (measured on the 2-core development machine, compilation
# included), of loading each shipped model (paid once per process: today mostly building a
# random-initialised skeleton to load the weights into), and of starting a worker (JAX, invjax)
_COST = {"deblur": 19.5, "inpaint": 14.0, "ct": 28.0, "mri": 11.0}
_MODELS = {"deblur": ("crr-nn", "dncnn"), "inpaint": ("crr-nn",), "ct": (LPD_NAME,), "mri": ()}
_LOAD = {"crr-nn": 4.0, "dncnn": 4.0, LPD_NAME: 10.0}
_STARTUP = 3.0


def split(task_names, jobs: int):
    """The tasks for this process and for each of ``jobs - 1`` workers: greedy, heaviest task to
    the group that would finish first, a worker's group starting at the cost of its start-up."""
    groups = [[] for _ in range(max(1, jobs))]
    totals = [0.0] + [_STARTUP] * (len(groups) - 1)
    for name in sorted(task_names, key=lambda t: -_COST.get(t, 10.0)):
        def cost(g):
            loaded = {m for t in groups[g] for m in _MODELS.get(t, ())}
            return _COST.get(name, 10.0) + sum(_LOAD[m] for m in set(_MODELS.get(name, ())) - loaded)

        g = min(range(len(groups)), key=lambda g: totals[g] + cost(g))
        totals[g] += cost(g)
        groups[g].append(name)
    return [[t for t in task_names if t in group] for group in groups]


def run_demo(task_names=tasks.TASKS, size: int = DEFAULT_SIZE, seed: int = 0, out="demo_output", *,
             figure: bool = True, progress: bool = True, jobs: int | None = None, stream=None) -> dict:
    """Run the demo and return the record written to ``out/demo.json``.

    Arguments:
        task_names: which of :data:`invjax.demo.tasks.TASKS` to run, in that order.
        size: images are ``size x size`` (``>= 16``).
        seed: seeds the noise, the masks and SURE's probes.
        out: folder for ``demo.json``, ``demo_<task>.png`` (with matplotlib) and
            ``demo_<task>.npz`` (the ground truth and every reconstruction shown in the table).
        figure: write the PNG panels (skipped with a message if matplotlib is missing).
        progress: show progress on stderr.
        jobs: processes (default: one per usable core, at most one per task): this one and
            ``jobs - 1`` workers, each with a share of the tasks (:func:`split`). The tasks are
            independent and compilation, which dominates, runs on one core per process, so two
            processes on two cores take about half the time. ``1`` runs everything here.
        stream: where the tables go (default ``sys.stdout``).

    Returns:
        ``{"tasks": {name: {"rows": [...], "tv_auto": {...}, ...}}, "wall_s": ..., ...}``: every
        row has ``method``, ``rule``, ``weight``, ``psnr``, ``ssim``, ``seconds`` and ``array`` (its
        image's key in the task's NPZ).

    Raises:
        ValueError: an unknown or empty ``task_names``, or ``size`` below 16.

    Example:
        The smallest run takes about 10 CPU-seconds (compilation), too long for a doctest, so it
        is skipped here:

        >>> import io, tempfile, invjax.demo
        >>> record = ij.demo.run_demo(("inpaint",), size=16, out=tempfile.mkdtemp(), figure=False,
        ...                           progress=False, jobs=1, stream=io.StringIO())  # doctest: +SKIP
        >>> sorted(record["tasks"]["inpaint"]["rows"][0])  # doctest: +SKIP
        ['array', 'method', 'psnr', 'rule', 'seconds', 'ssim', 'weight']

        The arguments are checked before anything runs:

        >>> ij.demo.run_demo(("denoise",))
        Traceback (most recent call last):
        ValueError: unknown task 'denoise'; choose from deblur, inpaint, ct, mri
    """
    t0 = time.perf_counter()
    cpu0 = _cpu_seconds()
    stream = sys.stdout if stream is None else stream
    task_names = tuple(task_names)
    unknown = [t for t in task_names if t not in tasks.TASKS]
    if unknown or not task_names:
        raise ValueError(f"unknown task {unknown[0] if unknown else None!r}; choose from {', '.join(tasks.TASKS)}")
    if not (isinstance(size, int) and size >= MIN_SIZE):
        raise ValueError(f"size must be an integer >= {MIN_SIZE}, got {size!r}")
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    jobs = max(1, min(len(task_names), usable if jobs is None else int(jobs)))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    draw = figure and report.matplotlib_available()
    record = {
        "invjax_demo": 1,
        "size": size,
        "seed": seed,
        "jobs": jobs,
        "jax": jax.__version__,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "usable_cpus": usable,
                    "load_average_start": _load()},
        "target_gap_db": TARGET_GAP_DB,
        "tasks": {},
    }
    print(f"invjax demo: {', '.join(task_names)} at {size}x{size}, seed {seed}, {jobs} process"
          f"{'es' if jobs > 1 else ''}; writing to {out}/", file=stream, flush=True)
    if figure and not draw:
        print("matplotlib is not installed: no figures (pip install 'invjax[demo]')", file=stream)
    args = {name: (name, size, seed, str(out), draw, progress, i) for i, name in enumerate(task_names)}
    mine, *theirs = split(task_names, jobs)
    theirs = [g for g in theirs if g]
    pools, futures = [], {}
    try:
        if theirs:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # spawn, not fork (JAX is multithreaded); each worker imports JAX and compiles its own
            context = multiprocessing.get_context("spawn")
            for group in theirs:
                pools.append(ProcessPoolExecutor(1, mp_context=context))
                for name in group:
                    futures[name] = pools[-1].submit(_run_task, *args[name])
        results, shown = {}, 0

        def show(wait: bool):  # the tables in the order asked for, as soon as each is ready
            nonlocal shown
            while shown < len(task_names):
                name = task_names[shown]
                if name not in results:
                    if name not in futures or not (wait or futures[name].done()):
                        return
                    results[name] = futures[name].result()
                _print_task(record, name, results[name], stream)
                shown += 1

        for name in mine:
            results[name] = _run_task(*args[name])
            show(wait=False)
        show(wait=True)
    finally:
        for pool in pools:
            pool.shutdown(wait=True, cancel_futures=True)
    record["wall_s"] = time.perf_counter() - t0
    record["cpu_s"] = _cpu_seconds() - cpu0
    record["machine"]["load_average_end"] = _load()
    path = out / "demo.json"
    path.write_text(json.dumps(record, indent=1))
    print(report.summary(record), file=stream)
    print(f"\nwrote {path}" + (", demo_<task>.png" if draw else "") + ", demo_<task>.npz", file=stream)
    load = record["machine"]["load_average_start"]
    print(f"invjax demo: total wall time {record['wall_s']:.1f} s, compilation included (CPU time of all "
          f"processes {record['cpu_s']:.1f} s; load average {load[0] if load else float('nan'):.1f} at the start)",
          file=stream, flush=True)
    return record


def _print_task(record, name, rec, stream):
    record["tasks"][name] = rec
    print("\n" + report.table(rec), file=stream, flush=True)


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the workers)."""
    try:
        import resource
    except ImportError:
        return time.process_time()
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _load():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _row(method, rule, weight, psnr, ssim, seconds, **extra):
    return {"method": method, "rule": rule, "weight": None if weight is None else float(weight),
            "psnr": float(psnr), "ssim": float(ssim), "seconds": float(seconds), **extra}


@eqx.filter_jit
def _scores(image, x_true):
    psnr, ssim = sweep.scores(image[None], x_true)
    return psnr[0], ssim[0]


def _run_task(name: str, n: int, seed: int, out: str, draw: bool, show_progress: bool, position: int = 0) -> dict:
    """One task, start to end (also the unit of work of a worker process)."""
    t_task, cpu = time.perf_counter(), time.process_time()
    out = Path(out)
    bar = report.Progress(name, 1, show_progress, position)
    try:
        rec = _stages(name, n, seed, out, draw, bar, t_task)
    finally:
        bar.close()
    rec["cpu_seconds"] = time.process_time() - cpu  # this task's share of its process
    rec["process"] = os.getpid()
    return rec


class _Rows:
    """The rows of one task's table, the images behind them (saved to the NPZ) and the panels of
    its figure."""

    def __init__(self, x_true):
        self.x_true = x_true
        self.rows, self.arrays = [], {"x_true": np.asarray(x_true, np.float32)}
        self.images = {"ground truth": x_true}

    def add(self, image, method, rule, weight, seconds, panel=None, **extra):
        image = jnp.asarray(image)
        psnr, ssim = _scores(image, self.x_true)
        key = f"row{len(self.rows)}"
        self.arrays[key] = np.asarray(image, np.float32)
        self.rows.append(_row(method, rule, weight, psnr, ssim, seconds, array=key, **extra))
        if panel:
            self.images[f"{panel}\n{float(psnr):.2f} dB"] = image
        return self.rows[-1]


def _stages(name, n, seed, out, draw, bar, t_task):
    with bar.stage("data"):
        t = time.perf_counter()
        task = tasks.build(name, n, seed)
        x_true = jax.block_until_ready(task.x_true)
        lpd = learned.pretrained(LPD_NAME) if task.lpd and LPD_NAME in learned.available() else None
        data_s = time.perf_counter() - t
    lpd_ok = lpd is not None and _same_geometry(lpd.op, task.op)
    # stages after the data: baseline, one per swept method, PnP, LPD, files
    bar.set_total(1 + 1 + len(task.variational) + (task.pnp is not None) + lpd_ok + 1)
    table = _Rows(x_true)
    rec = {"title": task.title, "size": n, "noise_sigma": task.sigma, "measured": task.measured,
           "data_seconds": data_s, "notes": list(task.notes)}

    with bar.stage(task.baseline[0]):
        t = time.perf_counter()
        base = jax.block_until_ready(task.show(eqx.filter_jit(task.baseline[1])(task.op, task.y)))
        table.add(base, task.baseline[0], "-", None, time.perf_counter() - t, panel=task.baseline[0])

    probe_key = jax.random.fold_in(jax.random.key(seed), 1000 + tasks.TASKS.index(name))
    tv_auto = None
    for method in task.variational:
        with bar.stage(f"{method.label}: {2 * len(method.grid)} solves"):
            sw = sweep.run(task, method, probe_key)
        if method.label == "TV":
            tv_auto = _tv_rows(task, sw, rec, table)
        else:
            picked = _picks(sw)
            rec.setdefault("sweeps", {})[method.label] = _sweep_record(sw, method, picked)
            i = picked["SURE"]
            table.add(task.show(sw.x[i]), method.label, "SURE (auto)", sw.weights[i], sw.seconds,
                      panel=f"{method.label} (SURE)", ground_truth_used=False, solver=method.note,
                      oracle_psnr=float(sw.psnr[picked["oracle"]]))

    if task.pnp is not None:
        cfg = task.pnp
        with bar.stage(f"PnP-DnCNN: {cfg.iterations} iterations"):
            t = time.perf_counter()
            # the weight sigma^2 is the Bayesian one; the penalty sets the denoiser's level,
            # sigma_d = sqrt(weight / rho)
            solver = solvers.ADMM(rho=task.sigma**2 / cfg.sigma_d**2, adapt_iters=0, max_iters=cfg.iterations, tol=0.0)
            problem = Problem(task.op, task.y, learned.PnP(cfg.denoiser), task.sigma**2)
            x = jax.block_until_ready(solve(problem, solver, x0=tv_auto).x)
            table.add(task.show(x), "PnP-DnCNN", f"sigma_d = {cfg.sigma_d / task.sigma:g} sigma, fixed", task.sigma**2,
                      time.perf_counter() - t, panel="PnP-DnCNN", ground_truth_used=False, sigma_d=cfg.sigma_d,
                      solver=cfg.note)

    if task.lpd:
        if lpd is None:
            rec["notes"].append(f"learned primal-dual: not shipped in this installation ('{LPD_NAME}' not in "
                                "ij.learned.available())")
        elif not lpd_ok:
            rec["notes"].append(f"learned primal-dual: skipped, '{LPD_NAME}' was trained for 64x64 images in this "
                                "geometry only (run with --size 64)")
        else:
            with bar.stage("learned primal-dual"):
                t = time.perf_counter()
                x = jax.block_until_ready(eqx.filter_jit(lambda m, y: m(y))(lpd, task.y))
                table.add(task.show(x), "learned primal-dual", f"trained ({LPD_NAME})", None, time.perf_counter() - t,
                          panel="learned primal-dual", ground_truth_used=False)

    oracle = rec.get("tv_auto", {}).get("oracle_psnr")
    learned_rows = [r for r in table.rows if r["method"] in LEARNED]
    for r in learned_rows:  # against TV at its best weight (which needed the truth)
        r["vs_tv_oracle_db"] = r["psnr"] - oracle
    if learned_rows:
        rec["notes"].append("against TV at its oracle weight: " + ", ".join(
            f"{r['method']} {r['vs_tv_oracle_db']:+.2f} dB" for r in learned_rows))

    with bar.stage("files"):
        np.savez_compressed(out / f"demo_{name}.npz", **table.arrays)
        rec["arrays"] = f"demo_{name}.npz"
        rec["rows"] = table.rows
        if draw:
            rec["figure"] = report.figure(rec, table.images, out / f"demo_{name}.png").name
    rec["seconds"] = time.perf_counter() - t_task
    return rec


def _picks(sw) -> dict:
    picked = {rule: pick(sw) for rule, pick in sweep.RULES.items()}
    picked["oracle"] = sweep.pick_oracle(sw)
    return picked


def _sweep_record(sw, method, picked) -> dict:
    return {"weights": sw.weights.tolist(), "psnr": sw.psnr.tolist(),
            "sure": sw.sure.tolist(), "sure_target": sw.risk.tolist(), "residual_ratio": sw.residual_ratio.tolist(),
            "solves": sw.solves, "iterations": sw.iterations, "seconds": sw.seconds, "solver": method.note,
            "picked": {rule: float(sw.weights[i]) for rule, i in picked.items()}}


def _tv_rows(task, sw, rec, table):
    """The three TV rows (SURE, discrepancy, oracle) and the record of how close the automatic
    weight came to the oracle; returns the SURE reconstruction (PnP starts from it)."""
    picked = _picks(sw)
    rec["tv_sweep"] = _sweep_record(sw, task.variational[0], picked)
    for rule, label, truth in (("SURE", "SURE (auto)", False), ("discrepancy", "discrepancy", False),
                               ("oracle", "oracle (uses the truth)", True)):
        i = picked[rule]
        table.add(task.show(sw.x[i]), "TV", label, sw.weights[i], sw.seconds, panel="TV (SURE)" if rule == "SURE" else None,
                  shared=True, ground_truth_used=truth, solver=task.variational[0].note)
    best = float(sw.psnr[picked["oracle"]])
    rec["tv_rules"] = {rule: {"weight": float(sw.weights[picked[rule]]), "psnr": float(sw.psnr[picked[rule]]),
                              "gap_db": best - float(sw.psnr[picked[rule]])} for rule in sweep.RULES}
    s = picked["SURE"]
    gap = best - float(sw.psnr[s])
    rec["tv_auto"] = {"rule": "SURE", "weight": float(sw.weights[s]), "psnr": float(sw.psnr[s]),
                      "oracle_weight": float(sw.weights[picked["oracle"]]), "oracle_psnr": best, "gap_db": gap,
                      "within_0_5_db": bool(gap <= TARGET_GAP_DB)}
    return sw.x[s]


def _same_geometry(a, b) -> bool:
    try:
        return (tuple(a.in_shape) == tuple(b.in_shape) and tuple(a.out_shape) == tuple(b.out_shape)
                and np.allclose(np.asarray(a.angles), np.asarray(b.angles)))
    except AttributeError:
        return False
