"""The notebooks (``notebooks/*.py``, jupytext percent scripts) as pages of the site.

Markdown cells are the page's prose; code cells are Python blocks, each followed by what it
printed and the matplotlib figures it left open when the notebook is executed. Execution runs
the script cell by cell in a fresh interpreter (``run_notebook.py``), from the repository root,
with the environment of the build (so ``INVJAX_NOTEBOOK_SIZE`` / ``INVJAX_NOTEBOOK_STEPS`` set
the notebooks' sizes, as in ``tests/test_notebooks.py``); a notebook that raises fails the build.
Results are cached in ``.cache/docs/notebooks/`` (``$INVJAX_DOCS_CACHE/notebooks/``) under a key of the notebook, those variables
and the library's source.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
CACHE = Path(os.environ.get("INVJAX_DOCS_CACHE") or ROOT / ".cache" / "docs") / "notebooks"
RUNNER = Path(__file__).resolve().parent / "run_notebook.py"
ENV_KEYS = ("INVJAX_NOTEBOOK_SIZE", "INVJAX_NOTEBOOK_STEPS")


@dataclass
class Notebook:
    path: Path
    title: str
    page: str  # "notebooks/01_deblurring_automatic_weight.md"
    cells: list[tuple[str, str]]  # ("markdown" | "code", source)


def parse(path: Path) -> list[tuple[str, str]]:
    """The cells of a percent-format script: ``[(kind, source)]`` (the jupytext header dropped)."""
    lines = path.read_text().splitlines()
    if lines and lines[0].strip() == "# ---":
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "# ---")
        lines = lines[end + 1:]
    cells: list[tuple[str, list[str]]] = []
    for line in lines:
        if line.startswith("# %%"):
            kind = "markdown" if "[markdown]" in line else "code"
            cells.append((kind, []))
        elif cells:
            cells[-1][1].append(line)
        elif line.strip():
            cells.append(("code", [line]))
    out = []
    for kind, body in cells:
        if kind == "markdown":
            body = [b[2:] if b.startswith("# ") else b[1:] if b.startswith("#") else b for b in body]
        text = "\n".join(body).strip("\n")
        if text.strip():
            out.append((kind, text))
    return out


def discover() -> list[Notebook]:
    found = []
    for path in sorted(NOTEBOOKS.glob("*.py")):
        cells = parse(path)
        title = next((src.splitlines()[0].lstrip("# ").strip() for kind, src in cells
                      if kind == "markdown" and src.startswith("# ")), path.stem)
        found.append(Notebook(path, title, f"notebooks/{path.stem}.md", cells))
    return found


def _library_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted((ROOT / "invjax").rglob("*")):
        if path.is_file() and path.suffix in (".py", ".json", ".eqx"):
            digest.update(str(path.relative_to(ROOT)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _key(nb: Notebook, library: str) -> str:
    digest = hashlib.sha256(nb.path.read_bytes())
    digest.update(library.encode())
    digest.update(json.dumps({k: os.environ.get(k) for k in ENV_KEYS}).encode())
    return digest.hexdigest()[:20]


def run(nb: Notebook, library: str) -> dict:
    """``{"cells": [{"stdout": str, "images": [base64 png]}] (one per code cell), "cpu_s": float}``."""
    cached = CACHE / f"{nb.path.stem}-{_key(nb, library)}.json"
    if cached.exists():
        return json.loads(cached.read_text())
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, str(RUNNER), str(nb.path)], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"notebook {nb.path.name} raised (run `python notebooks/{nb.path.name}`):\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    CACHE.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(result))
    return result


def _fence(text: str, lang: str) -> str:
    ticks = "````" if "```" in text else "```"
    return f"{ticks}{lang}\n{text.rstrip()}\n{ticks}"


def render(nb: Notebook, outputs: dict | None) -> tuple[str, dict[str, bytes]]:
    """The page's markdown and its images ``{file name: png bytes}``."""
    settings = ", ".join(f"`{k}={os.environ[k]}`" for k in ENV_KEYS if os.environ.get(k)) or "the notebook's default sizes"
    if outputs is None:
        note = (f"!!! note \"Not executed in this build\"\n    The outputs are not shown: run `python notebooks/{nb.path.name}` "
                "(or build the site with `INVJAX_DOCS_EXECUTE=1`).")
    else:
        note = (f"!!! info \"Executed when the site was built\"\n    `python notebooks/{nb.path.name}` at {settings}: "
                f"{outputs['cpu_s']:.0f} s of CPU time.")
    parts, images, code_index = [], {}, 0
    for i, (kind, source) in enumerate(nb.cells):
        if kind == "markdown":
            parts.append(source)
            if i == 0:
                parts.append(note)
            continue
        parts.append(_fence(source, "python"))
        if outputs is not None:
            cell = outputs["cells"][code_index]
            if cell["stdout"].strip():
                parts.append('<div class="nb-output" markdown>\n\n' + _fence(cell["stdout"], "text") + "\n\n</div>")
            for j, data in enumerate(cell["images"]):
                name = f"{nb.path.stem}_{code_index}_{j}.png"
                images[name] = base64.b64decode(data)
                parts.append(f"![figure {j + 1} of cell {code_index + 1}](../figures/notebooks/{name})")
        code_index += 1
    if not nb.cells or nb.cells[0][0] != "markdown":
        parts.insert(0, f"# {nb.title}\n\n{note}")
    return "\n\n".join(parts) + "\n", images


def render_all(nbs: list[Notebook], execute: bool) -> list[tuple[str, str, dict[str, bytes]]]:
    library = _library_hash() if execute else ""
    return [(nb.page, *render(nb, run(nb, library) if execute else None)) for nb in nbs]



def index_markdown(nbs: list[Notebook], executed: bool) -> str:
    lines = ["# Notebooks", "",
             "Worked examples, each a [jupytext](https://jupytext.readthedocs.io) percent script in `notebooks/` that also runs "
             "as a plain script (`python notebooks/NAME.py`; `INVJAX_NOTEBOOK_SIZE=32` runs it small, as the tests do). "
             + ("The pages show the outputs of a run made when this site was built." if executed
                else "This build shows the code without outputs."), ""]
    for nb in nbs:
        intro = next((src for kind, src in nb.cells if kind == "markdown"), "")
        paragraphs = [p for p in intro.split("\n\n") if p.strip() and not p.startswith("#")]
        summary = paragraphs[0].replace("\n", " ") if paragraphs else ""
        lines += [f"- [{nb.title}]({Path(nb.page).name}): {summary}"]
    return "\n".join(lines) + "\n"
