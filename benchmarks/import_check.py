"""Check ``ij.learned.import_weights`` against PyTorch itself: a peer venv with torch (CPU)
builds KAIR-layout DnCNNs with random weights (``model.0.weight``, ``model.2.weight``, ...;
one batch-norm-free as KAIR's released files, one with batch normalisation layers in eval mode,
as KAIR's ``act_mode='BR'``), saves their state dicts in torch's zip format and in the legacy
format (``_use_new_zipfile_serialization=False``, as KAIR's ``dncnn_25.pth``), and runs them on
random images; invjax imports each file without torch and must reproduce the outputs to 1e-5.

    python benchmarks/import_check.py [--out result.json]

The peer venv is ``benchmarks/.venvs/torch`` (created on first use; minutes). Prints one line
per file and exits non-zero if a difference exceeds the tolerance.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

SPEC = {"install": [["torch==2.14.1", "numpy"]], "check": "import torch, numpy"}
TOL = 1e-5

PEER = r'''
import sys, numpy as np, torch, torch.nn as nn
out = sys.argv[1]
torch.manual_seed(0)

def dncnn(channels, depth, width, bn):
    layers = [nn.Conv2d(channels, width, 3, padding=1, bias=True), nn.ReLU()]
    for _ in range(depth - 2):
        layers.append(nn.Conv2d(width, width, 3, padding=1, bias=True))
        if bn:
            layers.append(nn.BatchNorm2d(width, eps=1e-4))
        layers.append(nn.ReLU())
    layers.append(nn.Conv2d(width, channels, 3, padding=1, bias=True))
    net = nn.Module()
    net.model = nn.Sequential(*layers)   # state-dict keys model.0.weight, model.2.weight, ... (KAIR)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):   # trained-looking statistics
            m.running_mean.uniform_(-0.2, 0.2); m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5); m.bias.data.uniform_(-0.1, 0.1)
    return net.eval()

for name, channels, depth, bn in (("gray17", 1, 17, False), ("color20", 3, 20, False), ("gray_bn", 1, 17, True)):
    net = dncnn(channels, depth, 64, bn)
    x = torch.rand(2, channels, 48, 40) + 25 / 255 * torch.randn(2, channels, 48, 40)
    with torch.no_grad():
        y = x - net.model(x)
    torch.save(net.state_dict(), f"{out}/{name}_zip.pth")
    torch.save(net.state_dict(), f"{out}/{name}_legacy.pth", _use_new_zipfile_serialization=False)
    np.save(f"{out}/{name}_x.npy", x.numpy()); np.save(f"{out}/{name}_y.npy", y.numpy())
print(torch.__version__)
'''


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="write the result JSON here")
    args = parser.parse_args(argv)
    import invjax as ij

    t0 = time.perf_counter()
    py = _common.ensure_venv("torch", SPEC)
    venv_s = time.perf_counter() - t0
    rows, ok = {}, True
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "peer.py").write_text(PEER)
        run = subprocess.run([str(py), str(Path(tmp) / "peer.py"), tmp], env=_common.peer_env(), capture_output=True,
                             text=True, timeout=1800)
        if run.returncode != 0:
            raise RuntimeError(f"torch peer failed: {run.stderr[-2000:]}")
        torch_version = run.stdout.strip().splitlines()[-1]
        for name in ("gray17", "color20", "gray_bn"):
            x, y = np.load(f"{tmp}/{name}_x.npy"), np.load(f"{tmp}/{name}_y.npy")
            for fmt in ("zip", "legacy"):
                t = time.perf_counter()
                net = ij.learned.import_weights("dncnn", f"{tmp}/{name}_{fmt}.pth", bn_eps=1e-4)
                load_s = time.perf_counter() - t
                got = np.asarray(net.denoise(x if x.shape[1] > 1 else x[:, 0], 25 / 255)).reshape(y.shape)
                err = float(np.max(np.abs(got - y)))
                # the predicted noise x - D(x) too, relative to its size (random networks may predict little)
                scale = float(np.max(np.abs(x - y)))
                rel = float(np.max(np.abs((x - got) - (x - y)))) / scale
                ok &= err <= TOL and rel <= 1e-4
                rows[f"{name}_{fmt}"] = {"max_abs_error": err, "residual_max": scale, "residual_rel_error": rel,
                                         "import_s": load_s, "depth": net.depth}
                print(f"{name:8s} {fmt:6s} depth {net.depth:2d}: max |invjax - torch| = {err:.2e}, on the predicted "
                      f"noise (max {scale:.3g}) {rel:.1e} relative (import {load_s * 1e3:.0f} ms) "
                      f"{'ok' if err <= TOL and rel <= 1e-4 else 'FAIL'}", flush=True)
    result = {"torch": torch_version, "tolerance": TOL, "venv_s": venv_s, "rows": rows, "passed": ok,
              "machine": _common.machine()}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
