"""The documentation site builds strictly, documents every public name, and renders in a browser.

The default test builds the site as ``mkdocs build --strict`` does (warnings are errors: a broken
link or cross-reference, a public name without a docstring, a docstring griffe cannot parse, an
unknown table in ``docs/choosing.md``), with ``INVJAX_DOCS_EXECUTE=0`` (the notebooks rendered
without running them, the demo not run: ``tests/test_notebooks.py`` and ``tests/test_demo.py``
run those), then checks the generated API reference against the ``__all__`` lists. Slow: the
full build (the notebooks at their small size and the demo at its smallest, executed), and the
built site opened in headless Chromium (Debian's ``chromium`` and ``chromium-driver``, driven
by Selenium; skipped where they are missing).
"""

from __future__ import annotations

import functools
import http.server
import importlib
import inspect
import os
import pkgutil
import re
import resource
import shutil
import socketserver
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import invjax

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def build(site: Path, *, config: Path = ROOT / "mkdocs.yml", execute: bool = False, env: dict | None = None):
    """Run ``mkdocs build --strict`` into ``site``; return (process, CPU seconds it took)."""
    env = {**os.environ, "INVJAX_DOCS_EXECUTE": "1" if execute else "0", "NO_MKDOCS_2_WARNING": "1",
           "MPLBACKEND": "Agg", **(env or {})}
    start = _cpu_children()
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=3000)
    return proc, _cpu_children() - start


def test_site_builds_strictly(tmp_path):
    """One build (the suite's workers would each build a module-scoped fixture once), then the
    checks on what it produced."""
    proc, cpu = build(tmp_path / "site")
    warnings = [line for line in proc.stderr.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert proc.returncode == 0, (
        "mkdocs build --strict failed (`INVJAX_DOCS_EXECUTE=0 mkdocs build --strict` shows it; a docstring "
        "griffe cannot parse is fixed in the docstring):\n" + "\n".join(warnings) + "\n\n" + proc.stderr[-4000:])
    print(f"site built (not executed) in {cpu:.1f} CPU-s")
    assert not warnings
    check_reference(tmp_path / "site")
    check_generated_pages(tmp_path / "site")


# ---- the API reference against the __all__ lists -------------------------------------------------


def public_names() -> dict[str, object]:
    """``{package.name: object}`` over ``invjax.__all__``, every subpackage's ``__all__`` (any
    depth) and the public modules those list (modules themselves excluded)."""
    queue = ["invjax"] + [info.name for info in pkgutil.walk_packages(invjax.__path__, prefix="invjax.")
                          if info.ispkg and not any(p.startswith("_") for p in info.name.split("."))]
    found, seen = {}, set()
    while queue:
        name = queue.pop(0)
        if name in seen:
            continue
        seen.add(name)
        module = importlib.import_module(name)
        for attr in getattr(module, "__all__", ()):
            obj = getattr(module, attr)
            if inspect.ismodule(obj):
                queue.append(obj.__name__)
            else:
                found[f"{name}.{attr}"] = obj
    return found


def _sections(html: str) -> dict[str, str]:
    """``{heading id: its HTML up to the next heading}`` for mkdocstrings' object headings."""
    heads = list(re.finditer(r'<h(\d) id="([^"]+)" class="doc doc-heading"', html))
    return {m.group(2): html[m.end():(heads[i + 1].start() if i + 1 < len(heads) else len(html))]
            for i, m in enumerate(heads)}


def _hit(path: str, obj, sections: dict) -> str | None:
    """The reference entry of ``path``: under this path, an enclosing package's (a re-export of
    the same object), or where it is defined (a function its module's name shadows:
    ``invjax.tuning.fit.fit``)."""
    package, name = path.rsplit(".", 1)
    candidates = [f"{package.rsplit('.', k)[0]}.{name}" for k in range(package.count(".") + 1)]
    candidates += [f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}"]
    return next((c for c in candidates if c in sections), None)


def check_reference(out: Path):
    """Every public name of every ``__all__`` has an entry in the reference, with a signature
    and an example."""
    sections = {}
    for page in sorted((out / "reference").glob("*/index.html")):
        sections.update(_sections(page.read_text()))
    names = public_names()
    assert len(names) > 150  # the walk reached the subpackages
    missing, unsigned = [], []
    for path, obj in names.items():
        hit = _hit(path, obj, sections)
        if hit is None:
            missing.append(path)
        elif callable(obj) and not (inspect.isclass(obj) and issubclass(obj, BaseException)) \
                and "doc-signature" not in sections[hit]:
            unsigned.append(path)
    assert not missing, f"public names missing from the API reference: {missing}"
    assert not unsigned, f"reference entries without a signature: {unsigned}"
    # ... and an example, unless tests/test_doctests.py lists the name as lacking one (an alias,
    # PnP = DenoiserPrior, shows the example under the class's own name)
    from tests import test_doctests

    excused = {path for path, why in getattr(test_doctests, "UNDOCUMENTED", {}).items() if "Example" in why}
    no_example = [path for path, obj in names.items()
                  if callable(obj) and path not in excused and getattr(obj, "__name__", path.rsplit(".", 1)[1]) ==
                  path.rsplit(".", 1)[1] and "Examples:" not in sections[_hit(path, obj, sections)]]
    assert not no_example, f"reference entries without an example: {no_example}"


def test_every_public_callable_has_a_docstring():
    bare = []
    for path, obj in public_names().items():
        if inspect.isclass(obj):
            doc = vars(obj).get("__doc__")
        elif callable(obj):
            doc = obj.__doc__
        else:
            continue  # constants: the build checks them (docs/_gen/reference.py)
        if not (doc or "").strip():
            bare.append(path)
    assert not bare, f"public names without a docstring: {bare}"


def check_generated_pages(out: Path):
    choosing = (out / "choosing" / "index.html").read_text()
    assert choosing.count("<table>") >= 8 and "derivatives.json" in choosing
    assert "AMD EPYC" in choosing  # the machine each table was measured on
    for notebook in sorted((ROOT / "notebooks").glob("*.py")):
        page = out / "notebooks" / notebook.stem / "index.html"
        assert page.exists(), notebook.name
        assert "Not executed in this build" in page.read_text()
    for figure in ("crr-nn.png", "learning-curves.png", "derivative-accuracy.png"):
        assert (out / "figures" / figure).stat().st_size > 10_000
    assert "<math" in (out / "concepts" / "solvers" / "index.html").read_text()
    assert "<math" in (out / "reference" / "tuning" / "index.html").read_text()


@pytest.mark.slow  # a second full (unexecuted) build, 12-14 s: the default suite's budget is 10 minutes
def test_a_broken_link_or_reference_fails_the_build(tmp_path):
    """The strict build fails on a broken page link and on an unknown API cross-reference."""
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs)
    (docs / "changelog.md").write_text("# Changelog\n\n[a page](nowhere.md) and [a name][invjax.no_such_name]\n")
    config = (ROOT / "mkdocs.yml").read_text().replace("docs_dir: docs", f"docs_dir: {docs}")
    config = config.replace("- docs/_gen/", f"- {ROOT}/docs/_gen/").replace("paths: [.]", f"paths: [{ROOT}]")
    (tmp_path / "mkdocs.yml").write_text(config)
    proc, _ = build(tmp_path / "site", config=tmp_path / "mkdocs.yml")
    assert proc.returncode != 0
    assert "nowhere.md" in proc.stderr and "invjax.no_such_name" in proc.stderr, proc.stderr[-3000:]


# ---- slow: the full build, and a real browser ------------------------------------------------------


@pytest.fixture(scope="session")
def full_site(tmp_path_factory):
    out = tmp_path_factory.mktemp("full-site")
    cache = tmp_path_factory.mktemp("docs-cache")
    proc, cpu = build(out, execute=True, env={"INVJAX_NOTEBOOK_SIZE": "32", "INVJAX_NOTEBOOK_STEPS": "3",
                                              "INVJAX_DOCS_DEMO_SIZE": "16", "INVJAX_DOCS_POSTERIOR_SIZE": "32",
                                              "INVJAX_DOCS_CACHE": str(cache)})
    assert proc.returncode == 0, f"mkdocs build --strict (executed) failed:\n{proc.stderr[-6000:]}"
    print(f"site built (notebooks and demo executed) in {cpu:.0f} CPU-s")
    return out


@pytest.mark.slow
def test_full_build_executes_the_notebooks_and_the_demo(full_site):
    for notebook in sorted((ROOT / "notebooks").glob("*.py")):
        page = (full_site / "notebooks" / notebook.stem / "index.html").read_text()
        assert "Executed when the site was built" in page and 'class="nb-output"' in page, notebook.name
    for figure in ("demo_deblur", "demo_inpaint", "demo_ct", "demo_mri", "posterior"):
        assert (full_site / "figures" / f"{figure}.png").stat().st_size > 20_000, figure


@pytest.mark.slow
def test_site_renders_in_chromium(full_site, tmp_path_factory):
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(full_site))
    handler.func.log_message = lambda *args: None
    server = socketserver.TCPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1300,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    shots = tmp_path_factory.mktemp("screenshots")
    notebook = sorted((ROOT / "notebooks").glob("*.py"))[0].stem
    pages = {"home": ("", 2), "api": ("reference/learned/", 0), "notebook": (f"notebooks/{notebook}/", 0),
             "start": ("getting-started/", 4)}
    try:
        for label, (path, min_images) in pages.items():
            driver.get(f"http://127.0.0.1:{server.server_address[1]}/{path}")
            state = driver.execute_script(
                "return {title: document.title, h1: (document.querySelector('article h1') || {}).textContent,"
                " images: Array.from(document.querySelectorAll('article img')).map("
                "   i => ({src: i.currentSrc, ok: i.complete && i.naturalWidth > 0})),"
                " maths: document.querySelectorAll('article math').length,"
                " code: document.querySelectorAll('article pre').length};")
            errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
            height = driver.execute_script("return document.body.scrollHeight")
            driver.set_window_size(1300, min(height, 8000))
            driver.save_screenshot(str(shots / f"{label}.png"))
            print(f"{label}: {path or '/'} title {state['title']!r}, {len(state['images'])} images, "
                  f"{state['maths']} formulas, {state['code']} code blocks; screenshot {shots / f'{label}.png'}")
            assert not errors, f"{label}: console errors {errors}"
            assert state["h1"], f"{label}: no heading rendered"
            assert len(state["images"]) >= min_images, f"{label}: {state['images']}"
            assert all(i["ok"] for i in state["images"]), f"{label}: images that did not load: {state['images']}"
            if label == "api":
                assert state["code"] > 20 and state["maths"] > 0
            if label == "notebook":
                assert state["code"] > 3
    finally:
        driver.quit()
        server.shutdown()
