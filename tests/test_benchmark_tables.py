"""benchmarks/README.md and the README's benchmark summary are what benchmarks/tables.py makes of the JSON."""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "tables.py"


@pytest.fixture(scope="module")
def tables():
    spec = importlib.util.spec_from_file_location("benchmark_tables", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_tables_are_up_to_date():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr + "\n(rerun `python benchmarks/tables.py` and commit both files)"


def test_every_result_file_is_tabulated_or_listed(tables):
    present = {p.name for p in tables.RESULTS.glob("*.json")}
    assert present <= set(tables.TABULATED) | set(tables.NOT_TABULATED)
    doc = (ROOT / "benchmarks" / "README.md").read_text()
    for name in present:
        assert name in doc


def test_summary_numbers_come_from_the_json(tables):
    """Spot checks against the JSON, independent of the script's formatting helpers."""
    block = (ROOT / "README.md").read_text().split(tables.BEGIN)[1].split(tables.END)[0]
    ops = json.loads((tables.RESULTS / "operators.json").read_text())["ratios"]["ParallelBeam2D"]
    assert f"| {ops['invjax_over_astra_best']:.2f} |" in block
    ct = json.loads((tables.RESULTS / "learned_ct.json").read_text())["methods"]
    assert f"learned primal-dual {ct['lpd']['psnr']:.2f}" in block
    tuning = json.loads((tables.RESULTS / "tuning.json").read_text())["results"]["deblur"]["rows"]
    disc = next(r for r in tuning if r["method"] == "discrepancy")
    assert f"| {disc['gap']:.2f} | {disc['solves']} |" in block
    # each area names its machine as recorded in its JSON
    assert block.count("AMD EPYC") >= 4 and len(re.findall(r"^\*\*.+\*\* \(.+\)$", block, re.M)) == len(tables.SECTIONS)


def test_check_reports_a_stale_file(tables, tmp_path, monkeypatch, capsys):
    stale = tmp_path / "README.md"
    stale.write_text((ROOT / "benchmarks" / "README.md").read_text().replace("| 0.28 |", "| 0.29 |", 1))
    monkeypatch.setattr(tables, "OUTPUT", stale)
    monkeypatch.setattr(tables, "ROOT", tmp_path.parent)
    assert tables.main(["--check"]) == 1
    assert f"out of date: {tmp_path.name}/README.md" in capsys.readouterr().err
