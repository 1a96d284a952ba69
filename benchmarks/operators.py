"""Time invjax operators against peers; print a markdown table, write benchmarks/results/operators.json.

Cases:

* ``ParallelBeam2D`` at 256^2 with 180 angles over [0, pi) (363 detectors, spacing 1): forward
  and adjoint, against ``skimage.transform.radon`` / ``iradon(filter_name=None)`` and against
  every ASTRA CPU projector type (``line``, ``strip``, ``linear``, ``distance_driven``) through
  each ASTRA interface (``create_sino``/``create_backprojection``, ``OpTomo``, and ``FP``/``BP``
  algorithms on persistent data objects). The ASTRA reference is the projector type with the
  smallest forward + backprojection time, each through its fastest interface.
* ``Convolution`` (9x9 Gaussian PSF, circular) at 256^2 and 1024^2 against
  ``scipy.ndimage.convolve`` / ``correlate`` with ``mode="wrap"`` (skipped if not available).

Every invjax function is jitted and warmed up; every case reports the median, min and max over
``--repeats`` runs (``block_until_ready`` for JAX). The contenders of one comparison are timed
round-robin so that load from other processes spreads over all of them; ``--wait-idle`` waits
(up to that many seconds, Linux only) for an idle CPU before each round. The load average at
start and end goes into the JSON: on a shared machine the minima are the least disturbed
numbers.

Usage::

    python benchmarks/operators.py                 # full run on CPU
    python benchmarks/operators.py --quick         # fewer repeats, 256^2 convolution only
    python benchmarks/operators.py --cores 1       # everything on one core (per-core efficiency)
    python benchmarks/operators.py --device gpu    # JAX on the GPU (peers stay on the CPU)
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "operators.json"


# ---- timing -------------------------------------------------------------------------------------


def _busy_fraction(interval=0.25):
    def read():
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        return sum(fields), fields[3] + fields[4]

    total0, idle0 = read()
    time.sleep(interval)
    total1, idle1 = read()
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


def _wait_idle(max_wait, threshold=0.1):
    if max_wait <= 0 or not os.path.exists("/proc/stat"):
        return
    start = time.time()
    while time.time() - start < max_wait and _busy_fraction() > threshold:
        pass


def time_round_robin(contenders, repeats, wait_idle=0.0):
    """``contenders``: name -> zero-argument callable returning something to block on.
    Returns name -> (list of wall-clock seconds, list of process CPU seconds over all threads)."""
    import jax

    for fn in contenders.values():  # warm-up (compilation, caches)
        jax.block_until_ready(fn())
    times = {name: ([], []) for name in contenders}
    for _ in range(repeats):
        _wait_idle(wait_idle)
        for name, fn in contenders.items():
            cpu = time.process_time()
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times[name][0].append(time.perf_counter() - start)
            times[name][1].append(time.process_time() - cpu)
    return times


def _stats(seconds):
    wall, cpu = seconds
    ms = np.asarray(wall) * 1e3
    return {
        "median_ms": float(np.median(ms)),
        "min_ms": float(ms.min()),
        "max_ms": float(ms.max()),
        "runs": len(ms),
        # CPU time of this process over all its threads (XLA splits large loops over cores;
        # ASTRA's and scikit-image's CPU code runs on one thread)
        "cpu_median_ms": float(np.median(cpu) * 1e3),
    }


# ---- machine ------------------------------------------------------------------------------------


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions(names):
    out = {}
    for name in names:
        try:
            mod = importlib.import_module(name)
            out[name] = getattr(mod, "__version__", "unknown")
        except Exception:  # noqa: BLE001 - a missing peer is reported, not fatal
            out[name] = None
    return out


# ---- cases --------------------------------------------------------------------------------------


def bench_parallel_beam(args, results):
    import jax
    import jax.numpy as jnp

    from invjax.operators import check_adjoint
    from invjax.operators.tomography import ParallelBeam2D

    n, n_angles = 256, 180
    theta = np.linspace(0, np.pi, n_angles, endpoint=False)
    op = ParallelBeam2D((n, n), theta)
    k = op.n_detectors
    rng = np.random.default_rng(0)
    image = rng.random((n, n)).astype(np.float32)
    sino = rng.random((n_angles, k)).astype(np.float32)
    x, y = jnp.asarray(image), jnp.asarray(sino)
    fwd = jax.jit(lambda v: op(v))
    adj = jax.jit(lambda v: op.T(v))
    geometry = f"{n}x{n}, {n_angles} angles, {k} detectors"

    contenders = {
        ("invjax", "forward"): lambda: fwd(x),
        ("invjax", "adjoint"): lambda: adj(y),
    }
    dot32 = float(check_adjoint(op, jax.random.PRNGKey(0)))
    results["checks"]["parallel_beam_dot_test_float32"] = dot32

    try:
        from skimage.transform import iradon, radon

        degrees = np.rad2deg(theta)
        contenders[("skimage", "forward")] = lambda: radon(image, theta=degrees, circle=False)
        sino_sk = np.ascontiguousarray(sino.T)
        contenders[("skimage", "adjoint")] = lambda: iradon(
            sino_sk, theta=degrees, filter_name=None, circle=False, output_size=n
        )
    except ImportError:
        print("scikit-image not installed: skipping its radon/iradon")

    astra_pairs = {}
    try:
        import astra

        vol_geom = astra.create_vol_geom(n, n)
        proj_geom = astra.create_proj_geom("parallel", 1.0, k, theta)
        types = ["line", "linear"] if args.quick else ["line", "strip", "linear", "distance_driven"]
        for ptype in types:
            try:
                pid = astra.create_projector(ptype, proj_geom, vol_geom)
            except Exception as err:  # noqa: BLE001 - not every build has every type
                print(f"astra projector {ptype!r} unavailable: {err}")
                continue
            astra_pairs[ptype] = _astra_interfaces(astra, pid, vol_geom, proj_geom, image, sino)
            for iface, (fp, bp) in astra_pairs[ptype].items():
                contenders[(f"astra-{ptype}-{iface}", "forward")] = fp
                contenders[(f"astra-{ptype}-{iface}", "adjoint")] = bp
        # agreement of conventions: ASTRA's Joseph ('linear') projector, same angles
        if "linear" in astra_pairs:
            ref = astra_pairs["linear"]["algorithm"][0]().copy()
            ours = np.asarray(fwd(x))
            results["checks"]["parallel_beam_vs_astra_linear_rel_l2"] = float(
                np.linalg.norm(ours - ref) / np.linalg.norm(ref)
            )
    except ImportError:
        print("astra-toolbox not installed: skipping ASTRA")

    times = time_round_robin(contenders, args.repeats, args.wait_idle)
    rows = {}
    for (impl, direction), secs in times.items():
        entry = {"case": "ParallelBeam2D", "geometry": geometry, "impl": impl, "direction": direction}
        entry.update(_stats(secs))
        results["cases"].append(entry)
        rows[(impl, direction)] = entry

    ours_pair = rows[("invjax", "forward")]["median_ms"] + rows[("invjax", "adjoint")]["median_ms"]
    ours_cpu = rows[("invjax", "forward")]["cpu_median_ms"] + rows[("invjax", "adjoint")]["cpu_median_ms"]
    summary = {"invjax_forward_plus_adjoint_ms": ours_pair, "invjax_forward_plus_adjoint_cpu_ms": ours_cpu}
    if ("skimage", "forward") in rows:
        sk_pair = rows[("skimage", "forward")]["median_ms"] + rows[("skimage", "adjoint")]["median_ms"]
        summary["skimage_forward_plus_adjoint_ms"] = sk_pair
        summary["invjax_over_skimage"] = ours_pair / sk_pair
    if astra_pairs:
        best = None
        for ptype, ifaces in astra_pairs.items():
            fp_iface = min(ifaces, key=lambda i: rows[(f"astra-{ptype}-{i}", "forward")]["median_ms"])
            bp_iface = min(ifaces, key=lambda i: rows[(f"astra-{ptype}-{i}", "adjoint")]["median_ms"])
            total = (
                rows[(f"astra-{ptype}-{fp_iface}", "forward")]["median_ms"]
                + rows[(f"astra-{ptype}-{bp_iface}", "adjoint")]["median_ms"]
            )
            cpu = (
                rows[(f"astra-{ptype}-{fp_iface}", "forward")]["cpu_median_ms"]
                + rows[(f"astra-{ptype}-{bp_iface}", "adjoint")]["cpu_median_ms"]
            )
            if best is None or total < best[0]:
                best = (total, ptype, fp_iface, bp_iface, cpu)
        total, ptype, fp_iface, bp_iface, cpu = best
        summary.update(
            astra_best_projector=ptype,
            astra_best_forward_interface=fp_iface,
            astra_best_adjoint_interface=bp_iface,
            astra_best_forward_plus_adjoint_ms=total,
            invjax_over_astra_best=ours_pair / total,
            astra_best_forward_plus_adjoint_cpu_ms=cpu,
            invjax_over_astra_best_cpu_time=ours_cpu / cpu,
            target_invjax_over_astra_at_most=1 / 3,
            target_met=bool(ours_pair / total <= 1 / 3 and dot32 <= 2e-6),
        )
    results["ratios"]["ParallelBeam2D"] = summary


def _astra_interfaces(astra, pid, vol_geom, proj_geom, image, sino):
    """Forward/backprojection callables of one ASTRA projector through three interfaces."""

    def create_fp():
        sid, out = astra.create_sino(image, pid)
        astra.data2d.delete(sid)
        return out

    def create_bp():
        bid, out = astra.create_backprojection(sino, pid)
        astra.data2d.delete(bid)
        return out

    W = astra.OpTomo(pid)
    flat_x, flat_y = image.ravel(), sino.ravel()

    vid = astra.data2d.create("-vol", vol_geom, image)
    sid = astra.data2d.create("-sino", proj_geom, sino)
    rid = astra.data2d.create("-vol", vol_geom, 0)
    pid_out = astra.data2d.create("-sino", proj_geom, 0)
    cfg = astra.astra_dict("FP")
    cfg.update(ProjectorId=pid, ProjectionDataId=pid_out, VolumeDataId=vid)
    fp_alg = astra.algorithm.create(cfg)
    cfg = astra.astra_dict("BP")
    cfg.update(ProjectorId=pid, ProjectionDataId=sid, ReconstructionDataId=rid)
    bp_alg = astra.algorithm.create(cfg)

    def alg_fp():
        astra.algorithm.run(fp_alg)
        return astra.data2d.get_shared(pid_out)

    def alg_bp():
        astra.algorithm.run(bp_alg)
        return astra.data2d.get_shared(rid)

    return {
        "create": (create_fp, create_bp),
        "optomo": (lambda: W * flat_x, lambda: W.T * flat_y),
        "algorithm": (alg_fp, alg_bp),
    }


def bench_convolution(args, results):
    import jax
    import jax.numpy as jnp

    try:
        from invjax.operators.convolution import Convolution
    except ImportError as err:
        print(f"invjax Convolution not available ({err}): skipping")
        results["skipped"].append("Convolution")
        return
    try:
        from scipy import ndimage
    except ImportError:
        ndimage = None

    size, sigma = 9, 2.0
    r = np.arange(size) - size // 2
    psf = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma**2))
    psf = (psf / psf.sum()).astype(np.float32)
    sizes = [256] if args.quick else [256, 1024]
    summary = {}
    for n in sizes:
        op = Convolution(jnp.asarray(psf), (n, n))
        image = np.random.default_rng(1).random((n, n)).astype(np.float32)
        x = jnp.asarray(image)
        fwd = jax.jit(lambda v: op(v))
        adj = jax.jit(lambda v: op.T(v))
        contenders = {("invjax", "forward"): lambda: fwd(x), ("invjax", "adjoint"): lambda: adj(x)}
        if ndimage is not None:
            contenders[("scipy", "forward")] = lambda: ndimage.convolve(image, psf, mode="wrap")
            contenders[("scipy", "adjoint")] = lambda: ndimage.correlate(image, psf, mode="wrap")
            err = np.abs(np.asarray(fwd(x)) - ndimage.convolve(image, psf, mode="wrap")).max()
            results["checks"][f"convolution_{n}_max_abs_diff_vs_scipy"] = float(err)
        times = time_round_robin(contenders, args.repeats, args.wait_idle)
        rows = {}
        for (impl, direction), secs in times.items():
            entry = {
                "case": "Convolution", "geometry": f"{n}x{n}, 9x9 Gaussian PSF", "impl": impl, "direction": direction,
            }
            entry.update(_stats(secs))
            results["cases"].append(entry)
            rows[(impl, direction)] = entry
        if ndimage is not None:
            for direction in ("forward", "adjoint"):
                summary[f"{n}_{direction}_invjax_over_scipy"] = (
                    rows[("invjax", direction)]["median_ms"] / rows[("scipy", direction)]["median_ms"]
                )
    results["ratios"]["Convolution"] = summary


# ---- output ---------------------------------------------------------------------------------------


def markdown_table(results):
    lines = [
        "| case | geometry | implementation | direction | median ms | min ms | max ms | CPU ms (median) |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for c in results["cases"]:
        lines.append(
            f"| {c['case']} | {c['geometry']} | {c['impl']} | {c['direction']} | "
            f"{c['median_ms']:.2f} | {c['min_ms']:.2f} | {c['max_ms']:.2f} | {c['cpu_median_ms']:.1f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="JAX platform (peers run on the CPU)")
    parser.add_argument("--quick", action="store_true", help="5 repeats, fewer peers, 256^2 convolution only")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per case (>= 5; default 11, quick 5)")
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                        help="before each round wait up to SECONDS for an idle CPU (Linux)")
    parser.add_argument("--cores", type=int, default=None,
                        help="restrict this process to its first N allowed CPU cores (Linux; default: all)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON output path")
    args = parser.parse_args(argv)
    if args.cores is not None:
        # before JAX starts its thread pools; a single-core run compares per-core efficiency
        allowed = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, allowed[: max(1, args.cores)])
    args.repeats = args.repeats or (5 if args.quick else 11)
    if args.repeats < 5:
        parser.error("--repeats must be >= 5")

    import jax

    jax.config.update("jax_platforms", "cuda" if args.device == "gpu" else "cpu")
    device = jax.devices()[0]

    results = {
        "machine": {
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "cores_used": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "jax_device": str(device),
            "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
        "versions": _versions(["invjax", "jax", "jaxlib", "equinox", "numpy", "scipy", "skimage", "astra"]),
        "settings": {
            "device": args.device, "quick": args.quick, "repeats": args.repeats, "wait_idle_s": args.wait_idle,
            "cores": args.cores,
        },
        "cases": [],
        "ratios": {},
        "checks": {},
        "skipped": [],
    }
    bench_parallel_beam(args, results)
    bench_convolution(args, results)
    if hasattr(os, "getloadavg"):
        # other processes on the machine inflate medians; the minima are the least disturbed
        results["machine"]["load_average_at_end"] = list(os.getloadavg())

    print(markdown_table(results))
    print()
    for name, summary in results["ratios"].items():
        for key, value in summary.items():
            print(f"{name}: {key} = {value:.4g}" if isinstance(value, float) else f"{name}: {key} = {value}")
    for key, value in results["checks"].items():
        print(f"check: {key} = {value:.3g}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
