"""Shared by the benchmark scripts: the machine description recorded with every result, and
the peer virtual environments (one per peer that pins its own versions, under
``benchmarks/.venvs/<name>``, created on first use (minutes) and reused afterwards)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

VENVS = Path(__file__).resolve().parent / ".venvs"


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


def ensure_venv(name: str, spec: dict) -> Path:
    """The python of ``benchmarks/.venvs/<name>``; ``spec`` holds ``install`` (a list of pip
    argument lists, installed in order) and ``check`` (python code that must run in it)."""
    venv = VENVS / name
    py = venv / "bin" / "python"
    if py.exists() and subprocess.run([str(py), "-c", spec["check"]], capture_output=True).returncode == 0:
        return py
    _log(f"creating {venv} (once; this takes minutes)")
    log = VENVS / f"{name}-install.log"
    VENVS.mkdir(parents=True, exist_ok=True)
    base = getattr(sys, "_base_executable", sys.executable)
    with open(log, "w") as fh:
        subprocess.run([base, "-m", "venv", str(venv)], check=True, stdout=fh, stderr=subprocess.STDOUT)
        subprocess.run([str(py), "-m", "pip", "install", "--upgrade", "pip"], check=True, stdout=fh,
                       stderr=subprocess.STDOUT)
        for step in spec["install"]:
            subprocess.run([str(py), "-m", "pip", "install", *step], check=True, stdout=fh, stderr=subprocess.STDOUT)
    check = subprocess.run([str(py), "-c", spec["check"]], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"venv {name} does not import: {check.stderr[-2000:]} (see {log})")
    return py


def peer_env() -> dict:
    """The environment of a peer process: CPU only, no inherited venv or XLA flags."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "XLA_FLAGS")}
    env["JAX_PLATFORMS"] = "cpu"
    env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def machine() -> dict:
    """Platform, Python, CPU count and model, memory: stored with every benchmark result."""
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as fh:
            info["mem_total_gib"] = round(int(fh.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    return info
