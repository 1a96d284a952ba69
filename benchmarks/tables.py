"""Write the benchmark tables from ``benchmarks/results/*.json``.

    python benchmarks/tables.py            # writes benchmarks/README.md and the README's summary
    python benchmarks/tables.py --check    # exit 1 if either is out of date with the JSON

Every number in ``benchmarks/README.md`` and between the ``<!-- benchmarks -->`` markers of the
top-level README comes from a JSON file that a benchmark script wrote; the prose here says what
was run and never carries a number of its own. To change a table, rerun the benchmark (its
command is in each section) and then this script; ``tests/test_benchmark_tables.py`` fails while
the generated text differs from what the JSON gives.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
OUTPUT = ROOT / "benchmarks" / "README.md"
TOP_README = ROOT / "README.md"
BEGIN, END = "<!-- benchmarks -->", "<!-- /benchmarks -->"

# tabulated below, section by section; the others are listed with the reason they are not
TABULATED = (
    "operators.json", "tv_deconvolution.json", "derivatives.json", "derivatives_ct.json",
    "derivatives_accuracy.json", "tuning.json", "tuning_ct.json", "tuning_aniso.json",
    "tuning_speed.json", "learned_denoise.json", "bilevel_crr.json", "learned_ct.json",
    "learned_mri.json", "pnp.json", "sampling.json", "derivatives_defaults.json", "convergence_defaults.json",
)
NOT_TABULATED = {
    "tuning_quick.json": "a `--quick` smoke run of `benchmarks/tuning.py` (small sizes)",
    "tv_deconvolution_grad.json": "the gradient section of an earlier `tv_deconvolution.py` run; "
    "`derivatives.json` measures the gradients of the current implicit layer (its own table: "
    "`tv_deconvolution_grad.md`)",
}


def load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


# ---------------------------------------------------------------- formatting


def ms(seconds: float) -> str:
    """A duration in seconds as ``ms`` below one second, else ``s`` (3 significant digits)."""
    if seconds < 1:
        value = seconds * 1e3
        return f"{value:.3g} ms" if value < 100 else f"{value:.0f} ms"
    return f"{seconds:.3g} s" if seconds < 100 else f"{seconds:.0f} s"


def msf(milliseconds: float) -> str:
    return ms(milliseconds / 1e3)


def db(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}"


def ratio(value: float) -> str:
    return f"{value:.2f}" if value >= 0.1 else f"{value:.2g}"


def table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    """A markdown table; ``align`` gives ``l`` or ``r`` per column (default: first left, rest right)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def machine(d: dict) -> str:
    """The machine a JSON was measured on, from its ``machine`` field (or ``meta``)."""
    m = d.get("machine")
    if isinstance(m, dict) and "cpu_model" in m:
        text = f"{m['cpu_model']}, {m['cpus']} CPUs, {m['mem_total_gib']} GiB"
    elif isinstance(m, dict) and "cpu" in m:
        text = f"{m['cpu']}, {m['cores']} cores"
    elif "meta" in d:
        meta = d["meta"]
        text = f"{meta['machine']}, {meta['cpus']} CPUs (CPU model not recorded)"
    else:
        text = "not recorded"
    jax = d.get("jax") or d.get("meta", {}).get("jax") or d.get("versions", {}).get("jax")
    return f"{text}; JAX {jax}" if jax else text


def load_avg(d: dict) -> str:
    m = d.get("machine", {})
    if "load_average_at_start" in m:
        return f"1-min load average {m['load_average_at_start'][0]:.1f} at the start, {m['load_average_at_end'][0]:.1f} at the end"
    if "load_start" in d and isinstance(d["load_start"], dict):
        return f"1-min load average {d['load_start']['loadavg_1min']:.2f} at the start, {d['load_end']['loadavg_1min']:.2f} at the end"
    if "meta" in d and "load_start" in d["meta"]:
        return f"1-min load average {d['meta']['load_start'][0]:.1f} at the start, {d['meta']['load_now'][0]:.1f} at the end"
    return ""


def source(*names: str) -> str:
    files = ", ".join(f"[`{n}`](results/{n})" for n in names)
    return f"Source: {files}."


def caption(d: dict, *names: str) -> str:
    files = ", ".join(f"`{n}`" for n in names)
    return f"{machine(d)}; {files}"


def header(title: str, command: str, d: dict, *names: str) -> list[str]:
    lines = [f"## {title}", "", f"`{command}`", "", f"Machine: {machine(d)}."]
    avg = load_avg(d)
    if avg:
        lines[-1] += f" {avg[0].upper()}{avg[1:]}."
    lines += [source(*names), ""]
    return lines


# ---------------------------------------------------------------- sections


def operators() -> tuple[list[str], str]:
    d = load("operators.json")
    out = header("Operators against ASTRA, scikit-image and SciPy", "python benchmarks/operators.py", d, "operators.json")
    out += [f"Median of {d['settings']['repeats']} round-robin runs, jitted and warm; peers "
            f"scikit-image {d['versions']['skimage']}, SciPy {d['versions']['scipy']}, ASTRA {d['versions']['astra']} (CPU).", ""]
    cases: dict = {}
    for c in d["cases"]:
        cases.setdefault((c["case"], c["geometry"]), {}).setdefault(c["impl"], {})[c["direction"]] = c
    rows = []
    for (case, geom), impls in cases.items():
        ours = impls["invjax"]
        ours_pair = ours["forward"]["median_ms"] + ours["adjoint"]["median_ms"]
        for impl, dirs in impls.items():
            pair = dirs["forward"]["median_ms"] + dirs["adjoint"]["median_ms"]
            rows.append([f"`{case}`", geom, impl, msf(dirs["forward"]["median_ms"]), msf(dirs["adjoint"]["median_ms"]),
                         msf(pair), "1" if impl == "invjax" else ratio(ours_pair / pair)])
    out += [table(["operator", "size", "implementation", "forward", "adjoint", "forward + adjoint", "invjax / this"], rows,
                  "lllrrrr"), ""]
    ch = d["checks"]
    out += [f"Checks: `ParallelBeam2D` dot test in float32 {ch['parallel_beam_dot_test_float32']:.1e}; relative L2 "
            f"difference from ASTRA's `linear` projector {ch['parallel_beam_vs_astra_linear_rel_l2']:.1e}; `Convolution` "
            f"against `scipy.ndimage.convolve(mode=\"wrap\")` max abs difference {ch['convolution_256_max_abs_diff_vs_scipy']:.1e} (256²) "
            f"and {ch['convolution_1024_max_abs_diff_vs_scipy']:.1e} (1024²).", ""]
    r = d["ratios"]["ParallelBeam2D"]
    summary = table(
        ["case", "invjax", "peer", "invjax / peer"],
        [[f"`ParallelBeam2D` {cases_key(cases, 'ParallelBeam2D')}, forward + adjoint", msf(r["invjax_forward_plus_adjoint_ms"]),
          f"ASTRA (`{r['astra_best_projector']}`): {msf(r['astra_best_forward_plus_adjoint_ms'])}", ratio(r["invjax_over_astra_best"])],
         [f"same", msf(r["invjax_forward_plus_adjoint_ms"]),
          f"scikit-image: {msf(r['skimage_forward_plus_adjoint_ms'])}", ratio(r["invjax_over_skimage"])]]
        + [[f"`Convolution` {geom.split(',')[0]}, forward", msf(impls["invjax"]["forward"]["median_ms"]),
            f"SciPy: {msf(impls['scipy']['forward']['median_ms'])}",
            ratio(impls["invjax"]["forward"]["median_ms"] / impls["scipy"]["forward"]["median_ms"])]
           for (case, geom), impls in cases.items() if case == "Convolution"],
        "lrlr")
    return out, summary, caption(d, "operators.json")


def cases_key(cases, name):
    return next(geom for (case, geom) in cases if case == name)


def tv_deconvolution() -> tuple[list[str], str]:
    d = load("tv_deconvolution.json")
    s = d["settings"]
    out = header("TV deconvolution against SCICO and DeepInverse", "python benchmarks/tv_deconvolution.py", d,
                 "tv_deconvolution.json", "tv_deconvolution.md")
    pv = d["peer_versions"]
    out += [f"{s['n']}² Shepp–Logan, {s['psf']}, noise σ = {s['noise_sigma']}, isotropic TV, λ = {s['lambda']}; every method "
            f"on the same data, peers in their own virtual environments (SCICO {pv['scico']['scico']} with JAX {pv['scico']['jax']}; "
            f"DeepInverse {pv['deepinv']['deepinv']} with torch {pv['deepinv']['torch']}). Target: {d['target']['definition']} "
            f"({db(d['target']['psnr_db'], 3)} dB). Time to target: warm wall time of the smallest iteration count whose iterate "
            f"reaches it. The script's own report, with compile and setup times: [`tv_deconvolution.md`](results/tv_deconvolution.md).", ""]
    rows, short = [], []
    for key, m in d["methods"].items():
        t = m["time_to_target"]
        if t["reached"]:
            ttt = f"{ms(t['time']['median_s'])} ({t['iters']} its)"
        else:
            ttt = f"> {ms(t['lower_bound_s'])} (best {db(t['trace_max_psnr'])} dB in {t['trace_length']} its)"
        row = [m["label"], m["tv_boundary"], ms(m["first_call"]["first_call_s"]), ms(m["warm"]["median_s"]),
               db(m["psnr"]), ttt]
        rows.append(row)
        if key in ("invjax_admm", "scico_admm_example", "scico_admm_tuned", "deepinv_pgd"):
            short.append([m["label"], ms(m["warm"]["median_s"]), db(m["psnr"]), ttt])
    out += [table(["method", "TV boundary", "first call", f"warm, {s['budget_iters']} its", f"PSNR @{s['budget_iters']} (dB)",
                   "time to target"], rows, "llrrrr"), ""]
    out += [table(["target", "measured", "met"], [[t["target"], t["measured"], "yes" if t["met"] else "**no**"] for t in d["targets"]],
                  "lll"), ""]
    summary = table(["method", f"warm, {s['budget_iters']} its", "PSNR (dB)", "time to target"], short, "lrrr")
    return out, summary, caption(d, "tv_deconvolution.json")


def _rel(value, reference):
    return abs(value / reference - 1)


def derivatives() -> tuple[list[str], str]:
    d, dct, acc = load("derivatives.json"), load("derivatives_ct.json"), load("derivatives_accuracy.json")
    out = header("Derivatives through the solvers", "python benchmarks/derivatives.py", d,
                 "derivatives.json", "derivatives_ct.json", "derivatives_accuracy.json")
    ref = d["reference"]["deblur"]
    out += ["Each solver at its defaults; `grad` is the derivative of a loss in the weight, `jvp` a derivative in the data, both "
            "implicit (the problem's optimality conditions at the returned image); the unrolled column is the unrolled "
            "gradient's time over the solve's. Relative errors against central differences of the float64 reference "
            f"solve ({ref['solver']}). `derivatives_ct.json` is a second run (`--only ct`)"
            + (" on the same machine." if dct["machine"] == d["machine"] else f" on {machine(dct)}."), ""]
    rows, short = [], []
    for src in (d, dct):
        for r in src["rows"]:
            err = "–"
            if r["problem"] == "deblur" and "0.0001" in ref["weight"]:
                err = f"{_rel(r['grad_weight']['value'], ref['weight']['0.0001']):.2g} / {_rel(r['jvp_data']['value'], ref['data']['0.0001']):.2g}"
            row = [r["problem"], r["solver"], r["dtype"], str(r["iterations"]), ms(r["forward"]["warm"]["median_s"]),
                   ms(r["grad_weight"]["warm"]["median_s"]), ratio(r["grad_over_solve"]), ms(r["jvp_data"]["warm"]["median_s"]),
                   ratio(r["jvp_over_solve"]), f"{r['grad_weight_unrolled']['over_solve']:.1f}×", err]
            rows.append(row)
            if (r["problem"], r["solver"]) in (("deblur", "ADMM"), ("deblur", "FISTA"), ("ct", "PDHG")):
                short.append([r["problem"], r["solver"], ms(r["forward"]["warm"]["median_s"]), ms(r["grad_weight"]["warm"]["median_s"]),
                              ratio(r["grad_over_solve"]), f"{r['grad_weight_unrolled']['over_solve']:.1f}×"])
    out += [table(["problem", "solver", "dtype", "its", "solve", "`grad` (weight)", "/ solve", "`jvp` (data)", "/ solve",
                   "unrolled `grad` / solve", "rel. error (weight / data)"], rows, "lllrrrrrrrl"), ""]
    # memory of the compiled gradient
    mem_rows = []
    for src in (d, dct):
        for key, entries in src["memory"].items():
            by = {}
            for e in entries:
                by.setdefault(e["diff"], []).append(e)
            for diff, es in by.items():
                mem_rows.append([key, diff] + [f"{e['temp_mib']:.1f}" for e in sorted(es, key=lambda e: e["max_iters"])])
    iters = sorted({e["max_iters"] for e in next(iter(d["memory"].values()))})
    out += ["XLA temporary memory of the compiled gradient (MiB) by `max_iters`:", "",
            table(["problem / solver", "diff"] + [str(i) for i in iters], mem_rows, "ll" + "r" * len(iters)), ""]
    # accuracy against the tolerance
    a = acc["accuracy"]
    out += [f"Accuracy of the weight gradient against the solve's `tol` (`python benchmarks/derivatives.py --accuracy`, "
            f"deblurring, ADMM; reference: float64 central difference {a['reference_grad_weight']:.6f}):", ""]
    out += [table(["dtype", "`tol`", "iterations", "`grad` (weight)", "rel. error", "rel. error of `dx/dλ`"],
                  [[r["dtype"], f"{r['tol']:.0e}", str(r["iterations"]), f"{r['grad_weight']:.5f}", f"{r['rel_err_grad']:.1e}",
                    f"{r['rel_err_dx']:.1e}" if r["rel_err_dx"] else "(reference)"] for r in a["rows"]], "lrrrrr"), ""]
    # batches
    out += [f"`vmap` over a batch (CT, `derivatives_ct.json`): time per image over a single solve.", "",
            table(["solver", "batch", "batch time", "per image", "/ mean single solve", "/ single solve at the batch's most iterations"],
                  [[b["solver"], str(b["batch"]), ms(b["batch_s"]), ms(b["per_image_s"]), ratio(b["per_image_vs_mean_single"]),
                    ratio(b["per_image_vs_single_at_most_iterations"])] for b in dct["batch"]]), ""]
    summary = table(["problem", "solver", "solve", "implicit `grad`", "/ solve", "unrolled / solve"], short, "llrrrr")
    return out, summary, caption(d, "derivatives.json", "derivatives_ct.json")


def defaults() -> tuple[list[str], str]:
    """Convergence and weight gradients at each solver's DEFAULT settings (issue 20, item 3)."""
    d, c = load("derivatives_defaults.json"), load("convergence_defaults.json")
    out = header("At the defaults: convergence and derivatives", "python benchmarks/derivatives.py --defaults-accuracy "
                 "crr:64,deblur:64,crr:256,deblur:256,inpaint:64", d, "derivatives_defaults.json", "convergence_defaults.json")
    out += ["The weight gradient of the MSE at each solver's default settings in float32 against float64 central "
            "differences of solves far beyond the defaults. `crr`: camera, 9×9 Gaussian blur (σ 2 px), noise 0.01, the "
            "shipped CRR-NN, `FISTA()`; `deblur`: Shepp–Logan, the same blur, periodic TV, `ADMM()`; `inpaint`: camera, "
            "half the pixels, `TV()`, `PDHG()` (its default derivative raises; the row is with `failure=\"ignore\"`).", ""]
    rows = [[f"{r['case']} {r['n']}²", r["solver"], str(r["iterations"]), str(r["converged"]), db(r["psnr"]),
             f"{r['grad']:.5g}", f"{r['reference']['grad_central_difference']:.5g}", f"{r['rel_err']:.1e}"]
            for r in d["defaults_accuracy"]]
    out += [table(["case", "solver", "its", "converged", "PSNR", "`grad` (weight)", "float64 central diff.", "rel. error"],
                  rows, "llrlrrrr"), ""]
    out += [f"Every solver at its defaults on {c['size']}² natural images (`python benchmarks/convergence_defaults.py`; "
            f"machine {machine(c)}): 9×9 Gaussian blur (σ 2 px), noise 0.01, weight 5e-4; the last columns are the same "
            "problem solved to `tol=1e-6` (3000 iterations at most) and the relative distance between the two solutions.", ""]
    out += [table(["image", "regularizer", "solver", "its", "converged", "PSNR", "PSNR at 1e-6", "rel. distance"],
                  [[r["image"], r["regularizer"], r["solver"], str(r["iterations"]), str(r["converged"]), db(r["psnr"]),
                    db(r["psnr_tight"]), f"{r['distance_to_tight']:.1e}"] for r in c["rows"]], "lllrlrrr"), ""]
    summary = table(["case", "solver", "its", "rel. error of the weight gradient"],
                    [[f"{r['case']} {r['n']}²", r["solver"], str(r["iterations"]), f"{r['rel_err']:.1e}"]
                     for r in d["defaults_accuracy"]], "llrr")
    return out, summary, caption(d, "derivatives_defaults.json", "convergence_defaults.json")


def tuning() -> tuple[list[str], str]:
    d, dct, dan, sp = load("tuning.json"), load("tuning_ct.json"), load("tuning_aniso.json"), load("tuning_speed.json")
    out = header("Parameter selection", "python benchmarks/tuning.py", d, "tuning.json", "tuning_ct.json", "tuning_aniso.json")
    out += ["Eight training and eight held-out 128² images per problem; the oracle is the best of a 40-point grid by true "
            "held-out PSNR. The tables are the script's own (`table` in each JSON); `tuning_ct.json` is `--problems ct`, "
            "`tuning_aniso.json` a weight per direction.", ""]
    for src, name in ((d, "tuning.json"), (dct, "tuning_ct.json"), (dan, "tuning_aniso.json")):
        if src is not d:
            out += [f"`{name}`: machine {machine(src)}; {load_avg(src)}.", ""]
        out += [src["table"].strip(), ""]
    out += ["### At the solver defaults (`python benchmarks/tuning_speed.py`)", "",
            f"Machine: {machine(sp)}. {source('tuning_speed.json')} Problem: {sp['problem']}; oracle: best of "
            f"{len(sp['oracle']['grid'])} weights, {db(sp['oracle']['psnr'])} dB at {sp['oracle']['weight']:.3g}.", "",
            table(["rule", "solver", "weight", "PSNR (dB)", "gap to oracle (dB)", "solves", "first call", "warm"],
                  [[r["method"], r["solver"], f"{r['weight']:.3g}", db(r["psnr"]), db(r["gap"]), str(r["solves"]),
                    ms(r["first_s"]), ms(r["warm_s"])] for r in sp["rows"]], "llrrrrrr"), "",
            f"One `fit` step on a batch costs {sp['fit']['median_step_over_batch_solve']:.2f}× a batch solve of the same "
            f"images (median over {sp['fit']['steps']} steps; first step {sp['fit']['first_step_over_batch_solve']:.2f}×).", ""]
    rows = []
    for src in (d, dct):
        for key, res in src["results"].items():
            if "rows" not in res or key == "tikhonov":
                continue
            by = {r["method"]: r for r in res["rows"]}
            oracle = res["rows"][0]
            for r in res["rows"]:
                if r["method"].split(" ")[0] in ("oracle", "fit", "sure", "discrepancy"):
                    rows.append([res["title"].split(",")[0] if r is oracle else "", r["method"], db(r["psnr"]),
                                 db(r["gap"]), str(r["solves"]), ms(r["seconds"]) if r["seconds"] is not None else "–"])
    summary = table(["problem", "rule", "held-out PSNR (dB)", "gap to oracle (dB)", "lower-level solves", "time"], rows,
                    "llrrrr")
    return out, summary, caption(d, "tuning.json", "tuning_ct.json")


def learned() -> tuple[list[str], str]:
    d, bi = load("learned_denoise.json"), load("bilevel_crr.json")
    ct, mri = load("learned_ct.json"), load("learned_mri.json")
    out = header("Learned regularizers and denoisers", "python benchmarks/learned_denoise.py", d,
                 "learned_denoise.json", "bilevel_crr.json")
    out += [f"The shipped models, held-out mean PSNR (dB) on the last {d['held_out_images']} images of `train400` (never "
            "trained on), 128² centre crops, [time per image]; TV at its per-image oracle weight.", ""]
    methods = [("noisy", "noisy"), ("tv_oracle", "TV (oracle)"), ("bm3d", "BM3D"), ("crr-nn", "CRR-NN"), ("wcrr-nn", "WCRR-NN"),
               ("dncnn", "DnCNN"), ("ffdnet", "FFDNet")]
    rows = []
    for sigma, res in d["denoise"].items():
        row = [sigma]
        for key, _ in methods:
            m = res.get(key)
            if m is None:
                row.append("–")
            elif "seconds_per_image" in m:
                row.append(f"{db(m['mean_psnr'])} [{ms(m['seconds_per_image'])}]")
            else:
                row.append(db(m["mean_psnr"]))
        rows.append(row)
    out += [table(["σ (of 255)"] + [label for _, label in methods], rows), ""]
    out += stale_models(d)
    out += ["Training of the shipped models (each model's JSON in `invjax/learned/weights/` holds its commands):", "",
            table(["model", "steps", "training wall time", f"validation PSNR at σ = {next(iter(d['models'].values()))['validation_sigma']} (last)"],
                  [[name, str(m["steps"]), ms(m["wall_s"]), db(m["validation_psnr"][-1])] for name, m in d["models"].items()]), ""]
    out += [f"Bilevel fine-tuning of CRR-NN through FISTA's implicit derivative (`python benchmarks/bilevel_crr.py --steps "
            f"{bi['after']['steps']}`; machine {machine(bi)}): held-out deblurring {db(bi['before']['mean_psnr'])} → "
            f"{db(bi['after']['mean_psnr'])} dB in {bi['after']['steps']} steps; one gradient costs {bi['cost']['ratio']:.2f}× a solve.", ""]

    out += header("Learned reconstruction networks: sparse-view CT", "python benchmarks/learned_ct.py", ct, "learned_ct.json")
    tv = ct["methods"]["tv_oracle"]
    out += [f"{ct['size']}² random-ellipse phantoms ({ct['test_phantoms']} held out) and the modified Shepp–Logan, "
            f"`ParallelBeam2D` with {ct['angles']} angles, noise {ct['noise']}. TV: {tv['solver']}, at the best mean weight of "
            f"a {len(tv['grid'])}-point grid on {tv['selection_images']} test phantoms (an oracle); CRR-NN: the shipped "
            "model (trained on natural images); LPD and DEQ as trained by the commands below.", ""]
    labels = {"fbp": "FBP", "tv_oracle": "TV (oracle)", "crr-nn": "CRR-NN", "lpd": "learned primal-dual", "deq": "deep equilibrium"}
    out += [table(["method", "PSNR (dB)", "SSIM", "vs TV (dB)", "Shepp–Logan (dB)", "time per image", "trained with"],
                  [[labels.get(k, k), db(m["psnr"]), f"{m['ssim']:.3f}", f"{m['gain_over_tv_oracle_db']:+.2f}",
                    db(ct["shepp_logan"][k]["psnr"]) if k in ct["shepp_logan"] else "–", ms(m["seconds"]),
                    f"`{m['training']['trained_with']}` ({ms(m['training']['wall_s'])})" if "training" in m else ""]
                   for k, m in ct["methods"].items()], "lrrrrrl"), ""]
    sp = ct["speed"]
    out += [f"Speed at {sp['size']}²: one LPD forward pass {ms(sp['lpd_forward_s'])} against {ms(sp['tv_pdhg_s'])} for a "
            f"converged TV-PDHG ({sp['tv_iterations']} iterations): {sp['lpd_over_tv']:.3f}×; a batch of 16 in one call "
            f"{ms(sp['lpd_batch16_s'])}.", ""]

    out += header("Learned reconstruction networks: MRI", "python benchmarks/learned_mri.py", mri, "learned_mri.json")
    out += [f"{mri['size']}² slices of {mri['data']['source']} ({mri['data']['test']} test slices), {mri['acceleration']:g}× "
            f"Cartesian masks, complex noise σ = {mri['noise']}; TV at its per-image oracle weight; MoDL (K = "
            f"{mri['args']['iterations']}, width {mri['args']['width']}, depth {mri['args']['depth']}) trained "
            f"{mri['args']['steps_k1']} steps at K = 1 then {mri['args']['steps']} at K = {mri['args']['iterations']} "
            f"(`{mri['command']}`).", ""]
    mrows = []
    for name, s in mri["settings"].items():
        ms_ = s["methods"]
        mrows.append([f"{s['coils']} coil{'s' if s['coils'] > 1 else ''}", db(ms_["zero_filled"]["psnr"]["mean"]),
                      db(ms_["tv_oracle"]["psnr"]["mean"]), db(ms_["modl"]["psnr"]["mean"]), f"{s['modl_gain_over_tv_db']:+.2f}"])
    out += [table(["setting", "zero-filled", "TV (oracle)", "MoDL", "MoDL − TV"], mrows), ""]

    den25 = d["denoise"][max(d["denoise"], key=float)]
    sigma25 = max(d["denoise"], key=float)
    summary = table(
        ["task (held-out data)", "baseline", "TV (oracle weight)", "learned", "learned − TV (dB)"],
        [[f"denoising σ = {sigma25}/255, {d['held_out_images']} images", f"noisy {db(den25['noisy']['mean_psnr'])}",
          db(den25["tv_oracle"]["mean_psnr"]), f"DnCNN {db(den25['dncnn']['mean_psnr'])}, CRR-NN {db(den25['crr-nn']['mean_psnr'])}",
          f"{den25['dncnn']['mean_psnr'] - den25['tv_oracle']['mean_psnr']:+.2f}, {den25['crr-nn']['mean_psnr'] - den25['tv_oracle']['mean_psnr']:+.2f}"],
         [f"sparse-view CT {ct['size']}², {ct['angles']} angles", f"FBP {db(ct['methods']['fbp']['psnr'])}",
          db(tv["psnr"]), f"learned primal-dual {db(ct['methods']['lpd']['psnr'])}", f"{ct['methods']['lpd']['gain_over_tv_oracle_db']:+.2f}"]]
        + [[f"MRI {mri['size']}², {mri['acceleration']:g}×, {s['coils']} coil{'s' if s['coils'] > 1 else ''}",
            f"zero-filled {db(s['methods']['zero_filled']['psnr']['mean'])}", db(s["methods"]["tv_oracle"]["psnr"]["mean"]),
            f"MoDL {db(s['methods']['modl']['psnr']['mean'])}", f"{s['modl_gain_over_tv_db']:+.2f}"] for s in mri["settings"].values()],
        "lrrlr")
    return out, summary, caption(d, "learned_denoise.json", "learned_ct.json", "learned_mri.json")


def stale_models(d: dict) -> list[str]:
    """A note for each model whose shipped export differs from the one this run measured."""
    weights = ROOT / "invjax" / "learned" / "weights"
    stale = []
    for name, recorded in d["models"].items():
        path = weights / f"{name}.json"
        if path.exists():
            shipped = json.loads(path.read_text()).get("metadata", {})
            if shipped.get("export_command") != recorded.get("export_command") or shipped.get("note") != recorded.get("note"):
                stale.append(name)
    if not stale:
        return []
    names = ", ".join(stale)
    return [f"Not rerun: the shipped {names} has been re-exported since this run (its metadata in "
            "`invjax/learned/weights/` differs from the one recorded in the JSON), so its row is that of the earlier export.", ""]


def pnp() -> tuple[list[str], str]:
    d = load("pnp.json")
    out = header("Plug-and-play at the speed of its denoiser", d["command"], d, "pnp.json")
    cores = f"core(s) {d['affinity']}" if d.get("affinity") else "all cores"
    out += [f"One jitted denoiser call against one iteration of a whole compiled PnP solve ({d['iters']} iterations, "
            f"tol 0, warm, median), Gaussian-blur deblurring of camera, {cores}, XLA flags `{d.get('xla_flags') or '-'}`.", ""]
    rows = [[r["model"], f"{r['size']}²", ms(r["denoiser_s"]), ms(r["PnP-ADMM"]["iteration_s"]),
             ratio(r["PnP-ADMM"]["ratio"]), ms(r["PnP-FISTA"]["iteration_s"]), ratio(r["PnP-FISTA"]["ratio"])]
            for r in d["rows"]]
    head = ["model", "size", "denoiser call", "PnP-ADMM iteration", "/ denoiser", "PnP-FISTA iteration", "/ denoiser"]
    out += [table(head, rows, "llrrrrr"), ""]
    summary = table(["size", "denoiser call", "PnP-ADMM iteration / call", "PnP-FISTA iteration / call"],
                    [[f"{r['size']}²", ms(r["denoiser_s"]), ratio(r["PnP-ADMM"]["ratio"]), ratio(r["PnP-FISTA"]["ratio"])]
                     for r in d["rows"]], "lrrr")
    return out, summary, caption(d, "pnp.json")


def sampling() -> tuple[list[str], str]:
    d = load("sampling.json")
    out = header("Posterior sampling", d["command"], d, "sampling.json")
    cores = f"core(s) {d['affinity']}" if d.get("affinity") else "all cores"
    busy = f", 1-min load average {d['load_avg'][0]:.1f} at the end (core shared with other jobs)" if d.get("load_avg") else ""
    out += [f"{cores}, XLA flags `{d.get('xla_flags') or '-'}`{busy}" + (" (a `--quick` run: 10x fewer samples)." if d.get("quick") else "."), ""]
    summary_rows = []
    if "gaussian" in d:
        g = d["gaussian"]
        out += [f"**Exactness on a Gaussian posterior** ({g['size']}x{g['size']} blur, `SquaredL2` prior of weight "
                f"{g['weight']}, sigma {g['sigma']}, float64): errors against the closed-form posterior at each sampler's "
                "default step, beside the variance bias the chain's own stationary law predicts there.", ""]
        rows = [[r["sampler"], f"{r['n_samples']:,}", f"{r['step_times_L']:.3g}", f"{r['mean_rel_error']:.2e}",
                 f"{r['var_max_rel_error']:.3f}", f"{r['var_predicted_max_rel_bias']:.3f}", f"{r['min_ess']:.0f}"]
                for r in g["rows"]]
        out += [table(["sampler", "samples", "step x L", "mean rel. error", "variance max rel. error",
                       "predicted variance bias", "min ESS"], rows, "lrrrrrr"), ""]
        summary_rows += [[f"Gaussian {g['size']}², {r['sampler']}", f"mean {r['mean_rel_error']:.1e}, variance "
                          f"{r['var_max_rel_error']:.3f} (bias {r['var_predicted_max_rel_bias']:.3f})"] for r in g["rows"]]
    if "tv16" in d:
        t = d["tv16"]
        ref = t["reference"]
        out += [f"**TV posterior, {t['size']}x{t['size']} deblurring** (weight {t['weight']}, sigma {t['sigma']}): against "
                f"a {ref['sampler']} reference ({ref.get('n_samples', 0):,} steps, acceptance {ref['acceptance']:.2f}, step "
                f"{ref['step']:.2g}; a slow-mixing reference at this conditioning: read its errors as a rough check); equal gradient budgets; ESS per "
                "gradient evaluation of the slowest pixel (batch means) and of the potential's trace (Geyer).", ""]
        rows = [[r["sampler"], f"{r['gradient_evaluations']:,}", f"{r['mean_rel_error']:.3f}", f"{r['std_rel_error']:.3f}",
                 f"{r['min_ess_per_gradient']:.2e}", f"{r['potential_ess_per_gradient']:.2e}"] for r in t["rows"]]
        out += [table(["sampler", "gradient evaluations", "mean rel. error", "std rel. error", "min ESS / gradient",
                       "U ESS / gradient"], rows, "lrrrrr"), "",
                f"{t.get('best_skrock', 'SK-ROCK')} / MYULA ESS per gradient: {t['skrock_over_myula_min_ess_per_gradient']:.2f}x (slowest pixel), "
                f"{t['skrock_over_myula_potential_ess_per_gradient']:.2f}x (potential).", ""]
        summary_rows.append([f"TV {t['size']}², {t.get('best_skrock', 'SK-ROCK')} / MYULA ESS per gradient",
                             f"{t['skrock_over_myula_min_ess_per_gradient']:.2f}x"])
    if "memory" in d:
        m = d["memory"]
        out += ["**Memory** (256x256 TV, SK-ROCK, compiled temporary bytes): "
                f"{m['temp_bytes_1000']:,} at 10³ samples and {m['temp_bytes_10000']:,} at 10⁴ without the trace of U; "
                f"{m['temp_bytes_1000_trace']:,} and {m['temp_bytes_10000_trace']:,} with it.", ""]
        summary_rows.append(["256² memory, 10³ vs 10⁴ samples", f"{m['temp_bytes_1000']:,} vs {m['temp_bytes_10000']:,} bytes"])
    if "speed" in d:
        sp = d["speed"]
        rows = [[r["sampler"], f"{r['size']}²", ms(r["seconds_per_1000_samples"])] for r in sp["rows"]]
        out += [f"**Speed** (256x256 TV deblurring of camera, {sp['n_samples']} samples after compilation):", "",
                table(["sampler", "size", "per 1000 samples"], rows, "llr"), "",
                f"16 problems of 64x64 (SK-ROCK, {sp['batch16_64_n_samples']} samples each) in one vmapped call: "
                f"{ms(sp['batch16_64_seconds'])}.", ""]
        summary_rows += [[f"256² TV, {r['sampler']}, per 1000 samples", ms(r["seconds_per_1000_samples"])] for r in sp["rows"]]
    if "pnp" in d:
        q = d["pnp"]
        out += [f"**PnP-ULA** with the shipped DnCNN ({q['size']}x{q['size']} deblurring, sigma {q['sigma']}, eps "
                f"{q['noise_level']:.4f}, {q['n_samples']:,} samples): posterior-mean PSNR {db(q['psnr_pnp_mean'])} dB "
                f"against the TV posterior mean's {db(q['psnr_tv_mean_best'])} dB (best of weights "
                f"{', '.join(str(r['weight']) for r in q['tv'])}); posterior std on edges / on flat regions "
                f"{q['std_edge_over_flat']:.2f}.", ""]
        summary_rows.append([f"PnP-ULA (DnCNN) {q['size']}² mean PSNR vs TV MMSE",
                             f"{db(q['psnr_pnp_mean'])} vs {db(q['psnr_tv_mean_best'])} dB"])
    summary = table(["measurement", "value"], summary_rows, "lr")
    return out, summary, caption(d, "sampling.json")


# ---------------------------------------------------------------- assembly

SECTIONS = (
    ("Operators", operators),
    ("TV deconvolution against peers", tv_deconvolution),
    ("Derivatives through the solvers", derivatives),
    ("Derivatives at the defaults", defaults),
    ("Parameter selection", tuning),
    ("Learned models", learned),
    ("Plug-and-play", pnp),
    ("Posterior sampling", sampling),
)


def render() -> tuple[str, str]:
    """``(benchmarks/README.md, the README's summary block)``."""
    body, summaries = [], []
    for title, build in SECTIONS:
        lines, summary, cap = build()
        body += lines
        summaries.append((title, summary, cap))
    present = sorted(p.name for p in RESULTS.glob("*.json"))
    unknown = [n for n in present if n not in TABULATED and n not in NOT_TABULATED]
    if unknown:
        raise SystemExit(f"benchmarks/tables.py: new result files not tabulated: {', '.join(unknown)}; add them to a section "
                         "or to NOT_TABULATED")
    doc = ["# Benchmarks", "",
           "<!-- generated by `python benchmarks/tables.py` from benchmarks/results/*.json: edit the script or rerun the "
           "benchmark, not this file -->", "",
           "Every number below comes from a JSON file in [`results/`](results/) written by the benchmark script named "
           "in its section (`invjax bench <name>` runs one); the machine is the one that JSON records. The machines are "
           "2-CPU machines shared with other jobs, so timings carry the load noted with them where the JSON has it.", ""]
    doc += body
    doc += ["## Result files not tabulated", ""]
    doc += [f"- `{name}`: {why}" for name, why in NOT_TABULATED.items() if name in present]
    doc += [""]
    block = []
    for title, summary, cap in summaries:
        block += [f"**{title}** ({cap})", "", summary, ""]
    return "\n".join(doc).rstrip() + "\n", "\n".join(block).rstrip() + "\n"


def spliced_readme(block: str) -> str:
    text = TOP_README.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"README.md has no {BEGIN} ... {END} block")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{block}{END}{tail}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a generated file is out of date")
    args = parser.parse_args(argv)
    doc, block = render()
    readme = spliced_readme(block)
    targets = ((OUTPUT, doc), (TOP_README, readme))
    if args.check:
        stale = [str(p.relative_to(ROOT)) for p, text in targets if p.read_text() != text]
        if stale:
            print(f"out of date: {', '.join(stale)}; run python benchmarks/tables.py", file=sys.stderr)
            return 1
        return 0
    for path, text in targets:
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
