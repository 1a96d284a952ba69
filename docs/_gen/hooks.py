"""MkDocs hooks: the pages and figures of the site that are generated at build time.

- ``reference/*.md``: the API reference, one page per package, one entry per name of each
  ``__all__`` (:mod:`reference`); a public name without a docstring fails the build.
- ``choosing.md``'s tables and ``benchmarks/index.md``: from ``benchmarks/results/*.json``
  (:mod:`results`); the JSON files are published beside them.
- ``notebooks/*.md``: ``notebooks/*.py`` (jupytext percent scripts) rendered, executed unless
  ``INVJAX_DOCS_EXECUTE=0`` (:mod:`notebooks`); a notebook that raises fails the build.
- ``figures/*.png``: matplotlib (Agg) figures (:mod:`figures`).
- Math: ``pymdownx.arithmatex`` (generic mode) keeps ``$...$`` and ``$$...$$`` away from
  Markdown; :func:`on_page_content` turns them into MathML, which browsers render without
  any script (the site loads nothing from the network).

Environment: ``INVJAX_DOCS_EXECUTE`` (``1``, the default of ``mkdocs build``: run the notebooks
and the demo; ``0``, the default of ``mkdocs serve``: render the notebooks without outputs and
skip the demo's panels),
``INVJAX_NOTEBOOK_SIZE`` / ``INVJAX_NOTEBOOK_STEPS`` (passed to the notebooks),
``INVJAX_DOCS_DEMO_SIZE`` (the demo's image size, default 64). Outputs of the notebooks and
the demo are cached in ``.cache/docs/`` (or ``INVJAX_DOCS_CACHE``) keyed by their inputs and the
library's source.
"""

from __future__ import annotations

import html
import logging
import os
import re
import sys
from pathlib import Path

from mkdocs.structure.files import File

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import figures  # noqa: E402
import notebooks  # noqa: E402
import reference  # noqa: E402
import results  # noqa: E402

log = logging.getLogger("mkdocs.hooks.invjax")

_STATE: dict = {}

# Docstrings whose layout griffe's Google parser reports (a section entry that is not
# ``name: description``). Each is a warning (which fails the strict build) unless listed here by
# file and the start of the text griffe quotes; listed ones are logged at INFO. Fix the docstring
# and remove its entry; a new one fails the build.
KNOWN_DOCSTRING_WARNINGS: tuple[tuple[str, str], ...] = ()


class _KnownDocstringWarnings(logging.Filter):
    """Demote the listed griffe warnings to INFO (before mkdocs counts them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING:
            message = record.getMessage()
            for path, start in KNOWN_DOCSTRING_WARNINGS:
                if path in message and start in message:
                    record.levelno, record.levelname = logging.INFO, "INFO"
                    record.msg, record.args = f"(known, listed in docs/_gen/hooks.py) {message}", ()
        return True


def on_startup(command=None, **kwargs):
    _STATE["command"] = command
    for handler in logging.getLogger("mkdocs").handlers:
        if not any(isinstance(f, _KnownDocstringWarnings) for f in handler.filters):
            handler.addFilter(_KnownDocstringWarnings())


def _execute() -> bool:
    """``INVJAX_DOCS_EXECUTE`` if set; else run the notebooks and the demo for ``mkdocs build``,
    not for ``mkdocs serve`` (a quick preview)."""
    default = "0" if _STATE.get("command") == "serve" else "1"
    return os.environ.get("INVJAX_DOCS_EXECUTE", default) not in ("0", "", "false", "no")


def on_config(config, **kwargs):
    """Put the generated pages into the navigation after their index pages."""
    pages = reference.pages()
    nbs = notebooks.discover()
    _STATE.update(reference=pages, notebooks=nbs)
    nav = []
    for entry in config.nav or []:
        if isinstance(entry, dict) and len(entry) == 1:
            (title, target), = entry.items()
            if target == "reference/index.md":
                entry = {title: [target] + [{p.title: p.path} for p in pages]}
            elif target == "notebooks/index.md":
                entry = {title: [target] + [{nb.title: nb.page} for nb in nbs]}
            elif target == "benchmarks/index.md":
                reports = sorted(results.RESULTS.glob("*.md"))
                entry = {title: [target] + [{f"Report: {p.stem}": f"benchmarks/results/{p.name}"} for p in reports]}
        nav.append(entry)
    config.nav = nav
    return config


def _add(files, config, path: str, content: str | bytes) -> None:
    existing = files.get_file_from_path(path)
    if existing is not None:
        files.remove(existing)
    files.append(File.generated(config, path, content=content))


def on_files(files, config, **kwargs):
    execute = _execute()
    # the API reference
    for page in _STATE["reference"]:
        _add(files, config, page.path, page.markdown)
    _add(files, config, "reference/index.md", reference.index_markdown(_STATE["reference"]))
    problems = reference.undocumented()
    for name in problems:
        log.warning(f"public name without a docstring: {name} (write one; the reference shows it bare)")
    # decision tables and benchmarks, from the JSON
    _add(files, config, "choosing.md", results.choosing_markdown((HERE.parent / "choosing.md").read_text()))
    _add(files, config, "benchmarks/index.md", results.benchmarks_markdown())
    for path in sorted(results.RESULTS.iterdir()):
        if path.suffix in (".json", ".md") and path.is_file():
            _add(files, config, f"benchmarks/results/{path.name}", path.read_bytes())
    # figures
    drawn, _STATE["demo_output"] = figures.build(execute=execute)
    for name, data in drawn.items():
        _add(files, config, f"figures/{name}", data)
    # notebooks
    rendered = notebooks.render_all(_STATE["notebooks"], execute=execute)
    for page, markdown, images in rendered:
        _add(files, config, page, markdown)
        for name, data in images.items():
            _add(files, config, f"figures/notebooks/{name}", data)
    _add(files, config, "notebooks/index.md", notebooks.index_markdown(_STATE["notebooks"], execute))
    return files


_README_MARKER = re.compile(r"<!-- readme: ([\w-]+) -->")


def readme_block(name: str) -> str:
    """The README's text between ``<!-- name -->`` and ``<!-- /name -->``."""
    text = (ROOT / "README.md").read_text()
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    if start not in text or end not in text:
        raise ValueError(f"README.md has no {start} ... {end} block (asked for by a docs page)")
    return text.split(start, 1)[1].split(end, 1)[0].strip("\n")


def on_page_markdown(markdown, page, config, files, **kwargs):
    """Splice the README's marked blocks (``<!-- readme: NAME -->``: the install commands, the
    example and its output, kept in one place) and what the demo printed."""
    markdown = _README_MARKER.sub(lambda m: readme_block(m.group(1)), markdown)
    if "<!-- demo-output -->" in markdown:
        printed = _STATE.get("demo_output")
        block = (f"What `invjax demo` printed when this site was built:\n\n```text\n{printed.rstrip()}\n```"
                 if printed else "*(This build did not run the demo: `INVJAX_DOCS_EXECUTE=0`.)*")
        markdown = markdown.replace("<!-- demo-output -->", block)
    return markdown


_MATH = re.compile(r'<(span|div) class="arithmatex">(.*?)</\1>', re.S)


# TeX that latex2mathml does not know, rewritten with what it does (checked on the docstrings)
_TEX_REWRITES = ((r"\arg\min", r"\mathrm{arg\,min}"), (r"\arg\max", r"\mathrm{arg\,max}"), (r"\arg", r"\mathrm{arg}"),
                 (r"\sim ", r"\thicksim "))
_UNKNOWN_MACRO = re.compile(r"<m[io]>(\\[A-Za-z]+)</m[io]>")


def _mathml(match: re.Match) -> str:
    from latex2mathml.converter import convert

    tag, body = match.group(1), html.unescape(match.group(2)).strip()
    display = tag == "div"
    for opening, closing in ((r"\(", r"\)"), (r"\[", r"\]"), ("$$", "$$"), ("$", "$")):
        if body.startswith(opening) and body.endswith(closing):
            body = body[len(opening):len(body) - len(closing)]
            break
    for old, new in _TEX_REWRITES:
        body = body.replace(old, new)
    try:
        mathml = convert(body.strip(), display="block" if display else "inline")
        unknown = _UNKNOWN_MACRO.findall(mathml)
        if unknown:
            log.info(f"math with macros latex2mathml does not know ({', '.join(sorted(set(unknown)))}): {body[:80]}")
    except Exception as error:  # a macro latex2mathml does not know: show the TeX
        log.info(f"math left as TeX ({type(error).__name__}: {error}): {body[:80]}")
        code = f'<code class="tex">{html.escape(body)}</code>'
        return f'<div class="math-tex">{code}</div>' if display else code
    return f'<div class="math">{mathml}</div>' if display else mathml


def on_page_content(html_text, page, config, files, **kwargs):
    if "arithmatex" not in html_text:
        return html_text
    return _MATH.sub(_mathml, html_text)
