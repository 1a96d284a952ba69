"""The site's figures, drawn at build time with matplotlib (Agg).

- ``crr-nn.png``, ``wcrr-nn.png``: the shipped convex (weakly convex) ridge regularizers'
  composed filters and learned activation/potential profiles (``ConvexRidge.plot_filters``).
- ``learning-curves.png``: held-out PSNR during training, from ``benchmarks/runs/*/run.json``
  and the shipped models' JSON in ``invjax/learned/weights/``, with the training loss.
- ``derivative-accuracy.png``: the weight gradient's error against the solve's tolerance,
  from ``benchmarks/results/derivatives_accuracy.json``.
- ``posterior.png``: posterior mean and standard deviation of TV deblurring by SK-ROCK
  (``INVJAX_DOCS_POSTERIOR_SIZE``, default 64; cached), or a placeholder without execution.
- ``demo_<task>.png``: the panels ``invjax demo`` draws, from a run at build time
  (``INVJAX_DOCS_DEMO_SIZE``, default 64; cached in ``.cache/docs/demo/``). Without execution
  (``INVJAX_DOCS_EXECUTE=0``) each is a placeholder that says so.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
WEIGHTS = ROOT / "invjax" / "learned" / "weights"
CACHE = Path(os.environ.get("INVJAX_DOCS_CACHE") or ROOT / ".cache" / "docs") / "demo"
DEMO_TASKS = ("deblur", "inpaint", "ct", "mri")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig, dpi=96) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    _plt().close(fig)
    return buffer.getvalue()


def ridge(name: str) -> bytes:
    import invjax as ij

    model = ij.learned.pretrained(name)
    fig = model.plot_filters()
    return _png(fig)


def learning_curves() -> bytes:
    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    noisy = None
    for run in sorted((ROOT / "benchmarks" / "runs").glob("*/run.json")):
        d = json.loads(run.read_text())
        if "validation_psnr" not in d:
            continue
        label = f"{d.get('config', {}).get('model', run.parent.name)} (benchmarks/runs/{run.parent.name})"
        left.plot(d["validation_steps"], d["validation_psnr"], lw=1.2, label=label)
        noisy = d.get("noisy_psnr", noisy)
        if d.get("loss"):
            loss = d["loss"]
            window = max(1, len(loss) // 100)
            smooth = [sum(loss[i:i + window]) / window for i in range(0, len(loss) - window + 1, window)]
            every = d["steps"] / max(len(loss), 1)
            right.semilogy([every * (i + window / 2) for i in range(0, len(loss) - window + 1, window)], smooth, lw=1,
                           label=label)
    for path in sorted(WEIGHTS.glob("*.json")):
        meta = json.loads(path.read_text()).get("metadata", {})
        if meta.get("validation_sigma") and len(meta.get("validation_psnr") or ()) > 1:  # the denoisers
            left.plot(meta["validation_steps"], meta["validation_psnr"], "o-", ms=3, lw=1,
                      label=f"{path.stem} (shipped, last stage)")
            noisy = meta.get("noisy_psnr", noisy)
    denoise = json.loads((RESULTS / "learned_denoise.json").read_text())["denoise"]
    sigma = max(denoise, key=float)
    if "bm3d" in denoise[sigma]:
        left.axhline(denoise[sigma]["bm3d"]["mean_psnr"], color="0.3", ls="--", lw=0.8,
                     label=f"BM3D at σ = {sigma}/255 (learned_denoise.json)")
    if noisy:
        left.axhline(noisy, color="0.6", ls=":", lw=0.8, label="noisy input")
    left.set_xlabel("training step")
    left.set_ylabel("held-out PSNR (dB)")
    left.set_title("Validation during training", fontsize=10)
    left.legend(fontsize=7)
    right.set_xlabel("training step")
    right.set_ylabel("training loss (window mean)")
    right.set_title("Training loss", fontsize=10)
    right.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def derivative_accuracy() -> bytes:
    plt = _plt()
    acc = json.loads((RESULTS / "derivatives_accuracy.json").read_text())["accuracy"]
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for dtype in sorted({r["dtype"] for r in acc["rows"]}):
        rows = sorted((r for r in acc["rows"] if r["dtype"] == dtype), key=lambda r: r["tol"])
        ax.loglog([r["tol"] for r in rows], [r["rel_err_grad"] for r in rows], "o-", label=dtype)
        for r in rows:
            ax.annotate(f"{r['iterations']} its", (r["tol"], r["rel_err_grad"]), fontsize=7, xytext=(4, -10),
                        textcoords="offset points")
    ax.set_xlabel("solver tolerance `tol`")
    ax.set_ylabel("relative error of d(loss)/d(weight)")
    ax.set_title("Implicit gradient vs. float64 finite differences", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def posterior() -> bytes:
    """Posterior mean and standard deviation of TV deblurring (SK-ROCK), cached like the demo."""
    size = int(os.environ.get("INVJAX_DOCS_POSTERIOR_SIZE", 64))
    path = CACHE.parent / "posterior" / f"size{size}-{_library_hash()}.png"
    if path.exists():
        return path.read_bytes()
    import jax
    import numpy as np

    import invjax as ij

    sigma, weight, n = 0.01, 0.01, (2000 if size <= 32 else 5000)
    x = ij.phantoms.camera(size)
    A = ij.operators.Convolution(ij.operators.gaussian_psf(9, 1.5), shape=(size, size))
    y = ij.noise.gaussian(jax.random.key(0), A(x), sigma)
    problem = ij.Problem(A, y, ij.functionals.TV(), weight=weight)
    post = ij.sampling.sample(problem, ij.sampling.SKROCK(), jax.random.key(1), sigma=sigma, n_samples=n, burn_in=n // 10)
    plt = _plt()
    fig, axes = plt.subplots(1, 4, figsize=(11, 3.1))
    panels = ((x, "ground truth", "gray"), (y, "blurred, noisy data", "gray"),
              (post.mean, f"posterior mean: {float(ij.metrics.psnr(post.mean, x, data_range=1.0)):.2f} dB", "gray"),
              (post.std, "posterior std", "magma"))
    for ax, (image, title, cmap) in zip(axes, panels):
        shown = ax.imshow(np.asarray(image), cmap=cmap, **({"vmin": 0, "vmax": 1} if cmap == "gray" else {}))
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.colorbar(shown, ax=axes[-1], fraction=0.046)
    fig.suptitle(f"TV deblurring {size}², SK-ROCK, {n} samples (sigma {sigma}, weight {weight})", fontsize=10)
    data = _png(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def placeholder(text: str) -> bytes:
    plt = _plt()
    fig = plt.figure(figsize=(6, 1.2))
    fig.text(0.5, 0.5, text, ha="center", va="center", fontsize=10, color="0.35", wrap=True)
    return _png(fig, dpi=80)


def _library_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted((ROOT / "invjax").rglob("*")):
        if path.is_file() and path.suffix in (".py", ".json", ".eqx"):
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def demo_panels() -> tuple[dict[str, bytes], str]:
    """``invjax demo``'s PNG panels and what it printed, run at build time (cached by size and
    library source)."""
    size = int(os.environ.get("INVJAX_DOCS_DEMO_SIZE", 64))
    out = CACHE / f"size{size}-{_library_hash()}"
    if not all((out / f"demo_{t}.png").exists() for t in DEMO_TASKS):
        out.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([sys.executable, "-m", "invjax", "demo", "--size", str(size), "--out", str(out), "--jobs", "1"],
                              capture_output=True, text=True, cwd=ROOT, env={**os.environ, "MPLBACKEND": "Agg"}, timeout=3600)
        if proc.returncode != 0:
            raise RuntimeError(f"invjax demo --size {size} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        (out / "demo.txt").write_text(proc.stdout)
    return ({f"demo_{t}.png": (out / f"demo_{t}.png").read_bytes() for t in DEMO_TASKS},
            f"invjax demo --size {size}\n\n" + (out / "demo.txt").read_text().replace(str(out), "demo_output"))


def build(execute: bool) -> tuple[dict[str, bytes], str | None]:
    """``({file name: png bytes}, what the demo printed)`` for ``docs/figures/`` (``None``: the
    demo was not run)."""
    figures = {
        "crr-nn.png": ridge("crr-nn"),
        "wcrr-nn.png": ridge("wcrr-nn"),
        "learning-curves.png": learning_curves(),
        "derivative-accuracy.png": derivative_accuracy(),
    }
    if execute:
        panels, printed = demo_panels()
        figures.update(panels)
        figures["posterior.png"] = posterior()
        return figures, printed
    else:
        note = placeholder("The demo's panels are drawn when the site is built with INVJAX_DOCS_EXECUTE=1\n"
                           "(this build skipped running the demo).")
        figures.update({f"demo_{t}.png": note for t in DEMO_TASKS})
        figures["posterior.png"] = placeholder("The posterior figure is drawn when the site is built with "
                                               "INVJAX_DOCS_EXECUTE=1\n(this build skipped sampling).")
    return figures, None
