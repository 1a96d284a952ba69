"""Tables from ``benchmarks/results/*.json``, at build time: the decision page and the
benchmarks page. No number is typed here: each comes from the JSON named beside it, with the
machine that JSON records (``benchmarks/tables.py``'s ``machine``).

``docs/choosing.md`` is prose with markers ``<!-- table: NAME -->``; each marker is replaced by
the table :data:`TABLES` builds under that name. An unknown or unused marker fails the build.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"


def bench_tables():
    """``benchmarks/tables.py`` (the script that writes benchmarks/README.md), as a module."""
    spec = importlib.util.spec_from_file_location("_invjax_benchmark_tables", ROOT / "benchmarks" / "tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def _source(bt, d: dict, *names: str) -> str:
    files = ", ".join(f"[`{n}`](benchmarks/results/{n})" for n in names)
    return f"*Measured on {bt.machine(d)}; from {files}.*"


def _best(values, higher=True):
    """Index of the best value (``None`` entries ignored)."""
    pairs = [(v, i) for i, v in enumerate(values) if v is not None]
    return (max if higher else min)(pairs)[1]


def _mark(cells: list[str], index: int) -> list[str]:
    cells = list(cells)
    cells[index] = f"**{cells[index]}**"
    return cells


# ------------------------------------------------------------------------------ solvers


def solver_table(bt) -> str:
    """Per problem: each solver at its defaults, solve time, iterations, derivative cost."""
    d, dct = load("derivatives.json"), load("derivatives_ct.json")
    out = []
    for src, name in ((d, "derivatives.json"), (dct, "derivatives_ct.json")):
        rows = src["rows"]
        times = [r["forward"]["warm"]["median_s"] for r in rows]
        fastest = _best(times, higher=False)
        body = []
        for i, r in enumerate(rows):
            cells = [f"`{r['solver']}()`", str(r["iterations"]), "yes" if r["converged"] else "**no**",
                     bt.db(r["psnr"]), bt.ms(r["forward"]["warm"]["median_s"]),
                     bt.ms(r["grad_weight"]["warm"]["median_s"]), f"{r['grad_weight_unrolled']['over_solve']:.1f}×"]
            body.append(_mark(cells, 4) if i == fastest else cells)
        problem = rows[0]["problem"]
        out += [f"**{problem}** (`tol` {rows[0]['tol']:g}, {rows[0]['dtype']})", "",
                bt.table(["solver", "iterations", "converged", "PSNR (dB)", "solve", "implicit `grad` (weight)",
                          "unrolled `grad` / solve"], body, "lrlrrrr"), "", _source(bt, src, name), ""]
    return "\n".join(out)


def peer_table(bt) -> str:
    d = load("tv_deconvolution.json")
    s = d["settings"]
    rows = []
    for m in d["methods"].values():
        t = m["time_to_target"]
        ttt = f"{bt.ms(t['time']['median_s'])} ({t['iters']} its)" if t["reached"] else f"not reached in {t['trace_length']} its"
        rows.append([m["label"], bt.ms(m["warm"]["median_s"]), bt.db(m["psnr"]), ttt])
    return "\n".join([bt.table(["method", f"warm, {s['budget_iters']} its", "PSNR (dB)", "time to target"], rows, "lrrr"), "",
                      _source(bt, d, "tv_deconvolution.json")])


def accuracy_table(bt) -> str:
    acc = load("derivatives_accuracy.json")
    a = acc["accuracy"]
    rows = [[r["dtype"], f"{r['tol']:.0e}", str(r["iterations"]), f"{r['rel_err_grad']:.1e}"] for r in a["rows"]]
    return "\n".join([bt.table(["dtype", "`tol`", "iterations", "rel. error of the weight gradient"], rows, "lrrr"), "",
                      _source(bt, acc, "derivatives_accuracy.json")])


# ------------------------------------------------------------------------------ rules


def rule_table(bt) -> str:
    out = []
    for name in ("tuning.json", "tuning_ct.json"):
        d = load(name)
        for key, res in d["results"].items():
            rows = [r for r in res.get("rows", []) if not r["method"].startswith("grid-40 on training")]
            if not rows:
                continue
            candidates = [r["gap"] if not r["method"].startswith("oracle") else None for r in rows]
            best = _best(candidates, higher=False) if any(c is not None for c in candidates) else None
            body = []
            for i, r in enumerate(rows):
                cells = [r["method"], bt.db(r["psnr"]), bt.db(r["gap"]), str(r["solves"]),
                         bt.ms(r["seconds"]) if r["seconds"] is not None else "–",
                         "yes" if r["method"].startswith(("oracle", "fit")) else "no"]
                body.append(_mark(cells, 2) if i == best else cells)
            out += [f"**{res['title']}**", "",
                    bt.table(["rule", "held-out PSNR (dB)", "gap to oracle (dB)", "solves", "time", "needs ground truth"],
                             body, "lrrrrl"), "", _source(bt, d, name), ""]
    return "\n".join(out)


def rule_speed_table(bt) -> str:
    sp = load("tuning_speed.json")
    rows = [[r["method"], r["solver"], bt.db(r["psnr"]), bt.db(r["gap"]), str(r["solves"]), bt.ms(r["warm_s"])]
            for r in sp["rows"]]
    return "\n".join([f"{sp['problem']}.", "",
                      bt.table(["rule", "solver", "PSNR (dB)", "gap to oracle (dB)", "solves", "warm"], rows, "llrrrr"), "",
                      _source(bt, sp, "tuning_speed.json")])


# ------------------------------------------------------------------------------ priors


def prior_denoise_table(bt) -> str:
    d = load("learned_denoise.json")
    labels = {"noisy": "noisy", "tv_oracle": "TV (oracle weight)", "bm3d": "BM3D", "crr-nn": "CRR-NN", "wcrr-nn": "WCRR-NN",
              "dncnn": "DnCNN"}
    sigmas = list(d["denoise"])
    rows = []
    for key, label in labels.items():
        cells = [label]
        for sigma in sigmas:
            m = d["denoise"][sigma].get(key)
            cells.append("–" if m is None else bt.db(m["mean_psnr"]))
        rows.append(cells)
    for j, sigma in enumerate(sigmas, start=1):
        values = [float(r[j]) if r[j] != "–" and r[0] != "noisy" else None for r in rows]
        i = _best(values)
        rows[i][j] = f"**{rows[i][j]}**"
    return "\n".join([bt.table(["prior"] + [f"σ = {s}/255" for s in sigmas], rows), "",
                      f"Held-out mean PSNR (dB), {d['held_out_images']} images. " + _source(bt, d, "learned_denoise.json")])


def prior_reconstruction_table(bt) -> str:
    ct, mri = load("learned_ct.json"), load("learned_mri.json")
    labels = {"fbp": "FBP", "tv_oracle": "TV (oracle weight)", "crr-nn": "CRR-NN (shipped, natural images)",
              "lpd": "learned primal-dual", "deq": "deep equilibrium"}
    rows = [[labels.get(k, k), bt.db(m["psnr"]), f"{m['gain_over_tv_oracle_db']:+.2f}", bt.ms(m["seconds"])]
            for k, m in ct["methods"].items()]
    i = _best([float(r[1]) for r in rows])
    rows[i] = _mark(rows[i], 1)
    out = [f"**Sparse-view CT**, {ct['size']}², {ct['angles']} angles", "",
           bt.table(["method", "PSNR (dB)", "vs TV (dB)", "time per image"], rows, "lrrr"), "",
           _source(bt, ct, "learned_ct.json"), ""]
    mrows = []
    for s in mri["settings"].values():
        m = s["methods"]
        cells = [f"{s['coils']} coil{'s' if s['coils'] > 1 else ''}", bt.db(m["zero_filled"]["psnr"]["mean"]),
                 bt.db(m["tv_oracle"]["psnr"]["mean"]), bt.db(m["modl"]["psnr"]["mean"])]
        j = 1 + _best([m["zero_filled"]["psnr"]["mean"], m["tv_oracle"]["psnr"]["mean"], m["modl"]["psnr"]["mean"]])
        mrows.append(_mark(cells, j))
    out += [f"**MRI**, {mri['size']}², {mri['acceleration']:g}× Cartesian", "",
            bt.table(["setting", "zero-filled", "TV (oracle weight)", "MoDL"], mrows), "", _source(bt, mri, "learned_mri.json")]
    return "\n".join(out)


def pnp_table(bt) -> str:
    d = load("pnp.json")
    rows = [[r["model"], f"{r['size']}²", bt.ms(r["denoiser_s"]), bt.ratio(r["PnP-ADMM"]["ratio"]),
             bt.ratio(r["PnP-FISTA"]["ratio"])] for r in d["rows"]]
    return "\n".join([bt.table(["denoiser", "size", "denoiser call", "PnP-ADMM iteration / call",
                                "PnP-FISTA iteration / call"], rows, "llrrr"), "", _source(bt, d, "pnp.json")])


# ------------------------------------------------------------------------------ samplers


def sampler_table(bt) -> str:
    d = load("sampling.json")
    t = d["tv16"]
    rows = [[r["sampler"], f"{r['gradient_evaluations']:,}", f"{r['min_ess_per_gradient']:.2e}",
             f"{r['potential_ess_per_gradient']:.2e}", f"{r['mean_rel_error']:.3f}"] for r in t["rows"]]
    i = _best([r["min_ess_per_gradient"] for r in t["rows"]])
    rows[i] = _mark(rows[i], 2)
    speed = {r["sampler"]: r for r in d["speed"]["rows"]}
    srows = [[name, f"{r['size']}²", bt.ms(r["seconds_per_1000_samples"])] for name, r in speed.items()]
    return "\n".join([f"**TV posterior, {t['size']}² deblurring**: effective samples per gradient evaluation", "",
                      bt.table(["sampler", "gradient evaluations", "min ESS / gradient (slowest pixel)",
                                "ESS / gradient (potential)", "mean rel. error"], rows, "lrrrr"), "",
                      "**Speed**, TV deblurring:", "", bt.table(["sampler", "size", "per 1000 samples"], srows, "llr"), "",
                      _source(bt, d, "sampling.json")])


TABLES = {
    "solvers": solver_table,
    "solver-peers": peer_table,
    "derivative-accuracy": accuracy_table,
    "rules": rule_table,
    "rules-defaults": rule_speed_table,
    "priors-denoising": prior_denoise_table,
    "priors-reconstruction": prior_reconstruction_table,
    "pnp": pnp_table,
    "samplers": sampler_table,
}

_MARKER = re.compile(r"<!-- table: ([\w-]+) -->")


def choosing_markdown(template: str) -> str:
    """``docs/choosing.md`` with its markers replaced by the tables."""
    bt = bench_tables()
    used = set(_MARKER.findall(template))
    unknown = used - set(TABLES)
    if unknown:
        raise ValueError(f"docs/choosing.md: unknown table marker(s) {sorted(unknown)}; known: {sorted(TABLES)}")
    unused = set(TABLES) - used
    if unused:
        raise ValueError(f"docs/choosing.md: table(s) {sorted(unused)} not placed")
    return _MARKER.sub(lambda m: TABLES[m.group(1)](bt), template)


def benchmarks_markdown() -> str:
    """``benchmarks/README.md`` as ``benchmarks/tables.py`` renders it, for ``benchmarks/index.md``
    (the JSON files are published in ``benchmarks/results/`` beside it)."""
    doc, _ = bench_tables().render()
    doc = doc.replace("[`results/`](results/)", "`benchmarks/results/`")
    doc = re.sub(r"<!-- generated by .*? -->\n", "", doc)
    head = ("Every table below is rendered at build time by `benchmarks/tables.py` from the JSON files in "
            "`benchmarks/results/`, linked beside each section, which record the machine and the command.\n\n")
    title, rest = doc.split("\n", 1)
    return f"{title}\n\n{head}{rest}"
