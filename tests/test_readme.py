"""The README's fifteen-line example runs as written and prints sensible numbers."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def example() -> str:
    text = README.read_text()
    block = re.search(r"<!-- example -->\s*```python\n(.*?)```\s*<!-- /example -->", text, re.S)
    assert block, "README has no <!-- example --> python block"
    return block.group(1)


def test_example_block_is_short():
    code = [ln for ln in example().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert len(code) <= 18


@pytest.mark.slow
def test_example_runs_and_tv_recovers_the_phantom():
    proc = subprocess.run([sys.executable, "-c", example()], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    psnr, iters, converged = lines[0].split()
    assert float(psnr) > 27 and converged == "True"
    assert float(lines[1]) != 0  # the derivative in the weight
    w, psnr_auto, psnr_crr = map(float, lines[2].split())
    assert w > 0 and abs(psnr_auto - float(psnr)) < 1.5 and psnr_crr > 25
