"""``invjax demo`` and ``invjax bench``: the command line, the rules behind the demo, and the demo
itself against its own saved arrays.

The default run keeps one task end to end (inpainting, ~20 s on 2 cores); every task at
``--size 64`` and the whole four-task run are ``slow`` (compilation: ~10-30 s per task).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import invjax as ij
from invjax import cli
from invjax.cli import main
from invjax.demo import run, sweep, tasks

ROOT = Path(__file__).resolve().parent.parent


# ---- bad input: one line, non-zero, no traceback -------------------------------------------------
def _one_line_error(capsys, argv, code=2):
    # SystemExit's message is its exit code (argparse and the CLI's own errors exit with it)
    with pytest.raises(SystemExit, match=rf"^{code}$") as info:
        main(argv)
    assert info.value.code == code
    err = capsys.readouterr().err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "error" in err and "Traceback" not in err
    return err


@pytest.mark.parametrize(
    "argv, words",
    [
        (["demo", "--task", "denoise"], "invalid choice"),
        (["demo", "--size", "0"], "--size"),
        (["demo", "--size", "-64"], "--size"),
        (["demo", "--size", "8"], ">= 16"),
        (["demo", "--size", "big"], "--size"),
        (["demo", "--seed", "-1"], "--seed"),
        (["demo", "--jobs", "0"], "--jobs"),
        (["bench", "no_such_benchmark"], "unknown benchmark"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(capsys, monkeypatch, argv, words):
    monkeypatch.setattr(cli, "run_demo", lambda *a, **k: pytest.fail("the demo must not start"))
    assert words in _one_line_error(capsys, argv)


def test_unwritable_output_folder_is_refused_before_any_work(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(cli, "run_demo", lambda *a, **k: pytest.fail("the demo must not start"))
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    err = _one_line_error(capsys, ["demo", "--out", str(blocker / "out")])
    assert "cannot write to the output folder" in err and str(blocker) in err


def test_errors_while_running_are_one_line_with_status_1(capsys, monkeypatch, tmp_path):
    def missing(*args, **kwargs):
        raise ImportError("phantoms.camera needs scikit-image, which is not installed")

    monkeypatch.setattr(cli, "run_demo", missing)
    assert main(["demo", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "scikit-image" in err and "Traceback" not in err


def test_the_installed_command_reports_bad_input_without_a_traceback(tmp_path):
    # the real entry point, in a fresh process: exit status and stderr as a user sees them
    for argv, words in ((["demo", "--size", "0"], "--size"), (["demo", "--task", "xray"], "invalid choice")):
        proc = subprocess.run([sys.executable, "-m", "invjax", *argv], capture_output=True, text=True, cwd=tmp_path)
        assert proc.returncode == 2
        assert proc.stderr.count("\n") == 1 and words in proc.stderr and "Traceback" not in proc.stderr
        assert proc.stdout == ""


def test_arguments_reach_the_demo(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(cli, "run_demo", lambda *a, **k: calls.append((a, k)))
    assert main(["demo", "--task", "ct", "--size", "32", "--seed", "5", "--out", str(tmp_path / "o"), "--jobs", "1",
                 "--no-figure", "--quiet"]) == 0
    assert calls == [((("ct",),), dict(size=32, seed=5, out=str(tmp_path / "o"), figure=False, progress=False,
                                         jobs=1))]
    calls.clear()
    assert main(["demo", "--out", str(tmp_path)]) == 0
    (names,), kwargs = calls[0]
    assert names == tasks.TASKS and kwargs["size"] == run.DEFAULT_SIZE and kwargs["jobs"] is None


# ---- bench -----------------------------------------------------------------------------------------
def test_bench_lists_the_scripts(capsys):
    assert main(["bench"]) == 0
    out = capsys.readouterr().out
    expected = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_"))
    listed = [line.split()[0] for line in out.splitlines()[1:] if line.strip()]
    assert listed == expected and "tuning" in listed and "_common" not in out


def test_bench_runs_the_script_with_its_arguments(monkeypatch):
    seen = {}

    def fake_run(cmd, cwd=None):
        seen.update(cmd=cmd, cwd=cwd)
        return subprocess.CompletedProcess(cmd, 3)

    monkeypatch.setattr(cli.subprocess, "run", fake_run)
    assert main(["bench", "tuning.py", "--quick", "--problems", "ct"]) == 3  # its exit status
    assert seen["cmd"] == [sys.executable, str(ROOT / "benchmarks" / "tuning.py"), "--quick", "--problems", "ct"]
    assert Path(seen["cwd"]) == ROOT


def test_bench_really_starts_the_script():
    proc = subprocess.run([sys.executable, "-m", "invjax", "bench", "tuning", "--help"], capture_output=True,
                          text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "usage" in proc.stdout and "--quick" in proc.stdout


# ---- the pieces --------------------------------------------------------------------------------------
def test_rules_pick_from_the_grid():
    sw = sweep.Sweep(weights=np.array([1.0, 2.0, 4.0, 8.0]), x=None, psnr=np.array([20.0, 25.0, 24.0, np.nan]),
                     residual_ratio=np.array([0.5, 0.95, 1.2, 3.0]),
                     sure=np.array([3.0, np.nan, 1.0, 2.0]), risk=np.zeros(4), iterations=1, seconds=0.0)
    assert sweep.pick_sure(sw) == 2  # NaN is skipped
    assert sweep.pick_discrepancy(sw) == 1  # |log 0.95| < |log 1.2|
    assert sweep.pick_oracle(sw) == 1


def test_split_hands_out_every_task_once():
    for jobs in (1, 2, 3):
        groups = run.split(tasks.TASKS, jobs)
        assert len(groups) == jobs and sorted(sum(groups, [])) == sorted(tasks.TASKS)
    here, there = run.split(tasks.TASKS, 2)
    assert here and there  # both cores get work
    assert run.split(("mri",), 2) == [["mri"], []]


def test_mri_mask_is_4x_with_the_centre_and_depends_on_the_seed():
    m = tasks.mri_mask(64, 0)
    rows = m[:, 0] > 0
    assert m.shape == (64, 64) and np.all(m == m[:, :1]) and rows.sum() == 16
    assert rows[0] and rows[1] and rows[-1]  # low frequencies (DC at index 0)
    assert np.array_equal(m, tasks.mri_mask(64, 0)) and not np.array_equal(m, tasks.mri_mask(64, 1))


# (the demo's SURE is invjax.tuning.sure_grid: its unbiasedness for real, projected and complex data and
# the Tikhonov inverse of projected SURE are tested in tests/tuning/test_sure.py)
def test_the_demo_has_one_sure():
    assert not hasattr(sweep, "tikhonov_inverse") and not hasattr(sweep, "_evaluate") and not hasattr(sweep, "probe")
    assert "tuning.sure_grid" in sweep.run.__doc__


# ---- the demo ----------------------------------------------------------------------------------------
MARGIN_DB = {"deblur": 5.0, "inpaint": 15.0, "ct": 6.0, "mri": 1.5}  # TV (SURE) over the baseline


def check_task(record, name, out: Path, seed: int = 0):
    """Everything a task's JSON claims, against its NPZ and the rules' definitions."""
    rec = record["tasks"][name]
    rows = rec["rows"]
    methods = [(r["method"], r["rule"].split(" ")[0]) for r in rows]
    assert ("TV", "SURE") in methods and ("TV", "discrepancy") in methods and ("TV", "oracle") in methods
    if name in ("deblur", "inpaint") and "crr-nn" in ij.learned.available():
        assert ("CRR-NN", "SURE") in methods
    if name == "deblur" and "dncnn" in ij.learned.available():
        assert any(m == "PnP-DnCNN" for m, _ in methods)
    for r in rows:
        assert math.isfinite(r["psnr"]) and -1 <= r["ssim"] <= 1 and r["seconds"] > 0, r
        assert r["weight"] is None or r["weight"] > 0
    # the images behind every row: the numbers are recomputed from them
    arrays = np.load(out / rec["arrays"])
    x_true = arrays["x_true"]
    np.testing.assert_allclose(x_true, np.asarray(tasks.build(name, record["size"], seed).x_true), atol=1e-6)
    for r in rows:
        image = arrays[r["array"]]
        assert image.shape == x_true.shape and np.isrealobj(image)
        assert float(ij.metrics.psnr(image, x_true, data_range=1.0)) == pytest.approx(r["psnr"], abs=1e-3)
        assert float(ij.metrics.ssim(image, x_true, data_range=1.0)) == pytest.approx(r["ssim"], abs=1e-4)
    # the rules, from the sweep recorded beside them
    sw = rec["tv_sweep"]
    w, psnr = np.array(sw["weights"]), np.array(sw["psnr"])
    assert np.all(np.diff(w) > 0) and sw["solves"] == 2 * len(w)
    ratio, sure, target = np.array(sw["residual_ratio"]), np.array(sw["sure"]), np.array(sw["sure_target"])
    by_rule = {r["rule"].split(" ")[0]: r for r in rows if r["method"] == "TV"}
    assert by_rule["SURE"]["weight"] == pytest.approx(w[np.argmin(sure)])
    assert by_rule["discrepancy"]["weight"] == pytest.approx(w[np.argmin(np.abs(np.log(ratio)))])
    assert by_rule["oracle"]["weight"] == pytest.approx(w[np.argmax(psnr)])
    for rule, r in by_rule.items():
        assert r["psnr"] == pytest.approx(psnr[list(w).index(r["weight"])], abs=1e-3)
    # SURE, which never saw the truth, finds the minimum of what it estimates (within a grid step)
    assert abs(int(np.argmin(sure)) - int(np.argmin(target))) <= 1, (sure, target)
    # no ground truth, yet within 0.5 dB of the oracle, and well above the baseline
    auto = rec["tv_auto"]
    assert auto["rule"] == "SURE" and auto["psnr"] == pytest.approx(by_rule["SURE"]["psnr"], abs=1e-6)
    assert auto["oracle_psnr"] == pytest.approx(psnr.max()) and auto["gap_db"] >= -1e-9
    assert auto["gap_db"] <= record["target_gap_db"] == 0.5 and auto["within_0_5_db"]
    assert by_rule["SURE"]["psnr"] >= rows[0]["psnr"] + MARGIN_DB[name], (rows[0], by_rule["SURE"])
    return rec


@pytest.mark.slow  # ~20 s; the default suite measured 10:04 on 2 cores with it (budget 10 min)
def test_demo_inpainting_end_to_end(tmp_path, capsys):
    assert main(["demo", "--task", "inpaint", "--out", str(tmp_path), "--jobs", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    record = json.loads((tmp_path / "demo.json").read_text())
    assert list(record["tasks"]) == ["inpaint"] and record["size"] == 64 and record["seed"] == 0
    rec = check_task(record, "inpaint", tmp_path)
    # the table shows every row and the run reports its own wall time
    for r in rec["rows"]:
        assert r["method"] in out and f"{r['psnr']:.2f}" in out
    assert "total wall time" in out and f"{record['wall_s']:.1f} s" in out and record["wall_s"] > 0
    if run.report.matplotlib_available():
        assert (tmp_path / "demo_inpaint.png").stat().st_size > 10_000


@pytest.mark.slow
@pytest.mark.parametrize("name", tasks.TASKS)
def test_every_task_at_size_64(name, tmp_path, monkeypatch):
    shipped = run.LPD_NAME in ij.learned.available()
    if name == "ct" and not shipped:
        # the shipped network has not landed: exercise its row with an untrained one
        fake = ij.learned.LearnedPrimalDual(tasks.ct_operator(64), key=jax.random.key(0))
        available, pretrained = ij.learned.available, ij.learned.pretrained
        monkeypatch.setattr(ij.learned, "available", lambda: available() + (run.LPD_NAME,))
        monkeypatch.setattr(ij.learned, "pretrained", lambda n: fake if n == run.LPD_NAME else pretrained(n))
    record = run.run_demo((name,), size=64, out=tmp_path, jobs=1, progress=False, figure=False)
    rec = check_task(record, name, tmp_path)
    learned_rows = {r["method"]: r for r in rec["rows"] if "vs_tv_oracle_db" in r}
    for method, r in learned_rows.items():
        assert r["vs_tv_oracle_db"] == pytest.approx(r["psnr"] - rec["tv_auto"]["oracle_psnr"])
        if shipped or method != "learned primal-dual":  # a shipped model is well above the baseline
            assert r["psnr"] > rec["rows"][0]["psnr"] + 3, r
    if name == "ct":
        lpd = learned_rows["learned primal-dual"]
        if shipped:  # benchmarks/learned_ct.py: it beats TV at its oracle weight on Shepp-Logan (30.45 / 28.93 dB)
            assert lpd["vs_tv_oracle_db"] > 0.5


@pytest.mark.slow
def test_the_default_command_runs_all_tasks(tmp_path):
    # `invjax demo` as typed: all four tasks at the default size, the workers, the files (without
    # the suite's XLA_FLAGS, whose unoptimised code runs the denoiser 7x slower)
    flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split() if "optimization_level" not in f)
    proc = subprocess.run([sys.executable, "-m", "invjax", "demo", "--quiet"], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT), "XLA_FLAGS": flags})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "demo_output"
    record = json.loads((out / "demo.json").read_text())
    assert list(record["tasks"]) == list(tasks.TASKS) and record["size"] == run.DEFAULT_SIZE
    for name in tasks.TASKS:
        check_task(record, name, out)
    assert "total wall time" in proc.stdout.splitlines()[-1]
