"""BM3D worker for ``benchmarks/learned_denoise.py`` (runs in ``benchmarks/.venvs/bm3d``).

Reads ``--data`` (npz: ``noisy`` (N, H, W) float images in [0, 1], ``sigma`` the noise standard
deviation on that scale), denoises each image with ``bm3d.bm3d(y, sigma_psd=sigma)`` (the
package's defaults: all stages), times each call, and writes ``--out`` (npz: ``denoised``,
``seconds``, ``version``).
"""

import argparse
import time

import bm3d
import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    d = np.load(args.data)
    noisy, sigma = d["noisy"].astype(np.float64), float(d["sigma"])
    out, secs = [], []
    for y in noisy:
        t0 = time.perf_counter()
        out.append(np.asarray(bm3d.bm3d(y, sigma_psd=sigma), np.float64))
        secs.append(time.perf_counter() - t0)
    version = getattr(bm3d, "__version__", "?")
    np.savez(args.out, denoised=np.stack(out), seconds=np.asarray(secs), version=np.asarray(version))


if __name__ == "__main__":
    main()
