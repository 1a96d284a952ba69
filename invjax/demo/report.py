"""What ``invjax demo`` shows: the table, the progress display, the figure of each task."""

from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np


# ---- table ---------------------------------------------------------------------------------------
def _weight(w) -> str:
    return "-" if w is None else f"{w:.3g}"


def table(rec: dict) -> str:
    """The rows of one task as a fixed-width table, with its notes underneath."""
    header = f"{'method':<22} {'rule':<24} {'weight':>9} {'PSNR dB':>8} {'SSIM':>6} {'time s':>7}"
    lines = [rec["title"], header, "-" * len(header)]
    for r in rec["rows"]:
        mark = "*" if r.get("shared") else " "
        lines.append(f"{r['method']:<22} {r['rule']:<24} {_weight(r['weight']):>9} {r['psnr']:8.2f} "
                     f"{r['ssim']:6.3f} {r['seconds']:7.2f}{mark}")
    tv = rec.get("tv_sweep")
    if tv:
        lines.append(f"* one batched solve of {tv['solves']} problems ({len(tv['weights'])} weights, each at y and at "
                     f"y + eps b for SURE's divergence) gives every TV row; the rules choose from it")
    auto = rec.get("tv_auto")
    if auto:
        verdict = "within" if auto["within_0_5_db"] else "NOT within"
        lines.append(f"TV weight chosen by {auto['rule']} without the ground truth: {auto['psnr']:.2f} dB, "
                     f"{auto['gap_db']:.2f} dB below the grid oracle ({verdict} 0.5 dB)")
    for note in rec.get("notes", []):
        lines.append(note)
    return "\n".join(lines)


def summary(record: dict) -> str:
    lines = ["", "automatic TV weight against the grid oracle (PSNR dB):"]
    for name, rec in record["tasks"].items():
        a = rec.get("tv_auto")
        if a:
            lines.append(f"  {name:<8} {a['rule']:<5} {a['psnr']:6.2f}   oracle {a['oracle_psnr']:6.2f}   "
                         f"gap {a['gap_db']:5.2f}   {'ok' if a['within_0_5_db'] else 'ABOVE 0.5 dB'}")
    return "\n".join(lines)


# ---- progress ------------------------------------------------------------------------------------
def _terminal_width() -> int:
    """Columns of the terminal on stderr (0 when it is not one: a pipe, a log, a size-less pty)."""
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns if sys.stderr.isatty() else 0
    except (OSError, ValueError, AttributeError):
        return 0


class Progress:
    """One progress bar per task on stderr (``tqdm`` if installed and stderr is a terminal, else a
    line per stage).

    ``with progress.stage("TV: 24 solves"):`` names the running stage; the bar's clock keeps
    ticking during a long compilation (a background refresh), so nothing sits silent for more
    than a second."""

    def __init__(self, desc: str, total: int, enabled: bool = True, position: int = 0):
        self.desc, self.enabled = desc, enabled
        self.bar = None
        if enabled and _terminal_width() > 0:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, desc=f"{desc:<8}", file=sys.stderr, leave=False, dynamic_ncols=True,
                                position=position,
                                bar_format="{desc}: {n_fmt}/{total_fmt} |{bar:30}| {elapsed}{postfix}")
        self._stop = threading.Event()
        self._ticker = None
        if self.bar is not None:
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()

    def set_total(self, total: int):
        if self.bar is not None:
            self.bar.total = total
            self.bar.refresh()

    def _tick(self):
        while not self._stop.wait(0.5):
            try:
                self.bar.refresh()
            except Exception:  # a closed stream: stop refreshing, never break the run
                return

    @contextmanager
    def stage(self, label: str):
        t0 = time.perf_counter()
        if self.bar is not None:
            self.bar.set_postfix_str(label, refresh=True)
        elif self.enabled:
            print(f"[{self.desc}] {label} ...", file=sys.stderr, flush=True)
        yield
        if self.bar is not None:
            self.bar.update(1)
        elif self.enabled:
            print(f"[{self.desc}] {label}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)

    def close(self):
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        if self.bar is not None:
            self.bar.close()


# ---- figure --------------------------------------------------------------------------------------
def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def figure(rec: dict, images: dict, path: Path) -> Path:
    """Images (ground truth, measurements' baseline, reconstructions, each with its PSNR) and the
    TV sweep: PSNR against the weight with SURE on a second axis and the chosen weights marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = len(images) + (1 if rec.get("tv_sweep") else 0)
    fig, axes = plt.subplots(1, panels, figsize=(2.6 * panels, 3.0))
    axes = np.atleast_1d(axes)
    for ax, (title, img) in zip(axes, images.items()):
        ax.imshow(np.asarray(img), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    sw = rec.get("tv_sweep")
    if sw:
        ax = axes[-1]
        w = np.asarray(sw["weights"])
        ax.semilogx(w, sw["psnr"], "o-", ms=3, color="C0", label="PSNR (truth)")
        ax.set_xlabel("TV weight", fontsize=8)
        ax.set_ylabel("PSNR dB", fontsize=8, color="C0")
        ax.tick_params(labelsize=7)
        twin = ax.twinx()
        twin.semilogx(w, sw["sure"], "s--", ms=3, color="C1", label="SURE")
        twin.set_ylabel("SURE (no truth)", fontsize=8, color="C1")
        twin.tick_params(labelsize=7)
        for rule, colour in (("SURE", "C1"), ("discrepancy", "C2"), ("oracle", "C0")):
            if rule in sw["picked"]:
                ax.axvline(sw["picked"][rule], color=colour, lw=0.8, ls=":", label=rule)
        ax.legend(fontsize=6, loc="lower left", framealpha=0.6)
        ax.set_title("TV weight sweep", fontsize=8)
    fig.suptitle(rec["title"], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
