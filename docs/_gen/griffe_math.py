"""A griffe extension: the reST in invjax's docstrings, as the site's Markdown.

The docstrings are Google style, with a few reST constructs that read well in ``help()``:

- Sphinx roles, ``:class:`~invjax.Problem```, ``:func:`train```, become code that links to
  the name's entry where the reference has one (an optional cross-reference: a name that
  resolves nowhere stays plain code, no warning);

- ``:math:`...```, inline, becomes ``$...$``;
- an ``Example:`` section header is read as ``Examples:`` (griffe's Google parser turns the
  ``>>>`` lines of an ``Examples:`` section into highlighted doctest blocks, while it renders
  ``Example:`` as prose, where ``>>>`` would be nested quotes);
- ``.. math:: ...`` (the formula on the directive's line and/or on the more-indented lines
  below it), a display, becomes a ``$$ ... $$`` block at the directive's indentation.

``pymdownx.arithmatex`` then keeps the formulas away from Markdown, and the site's hook turns
them into MathML (docs/_gen/hooks.py). The library's docstrings are not changed.
"""

from __future__ import annotations

import importlib
import inspect
import re
from typing import Any

import griffe

_INLINE = re.compile(r":math:`([^`]+)`")
_ROLE = re.compile(r":(?:py:)?(?:class|func|data|mod|meth|attr|obj|exc|const):`([^`]+)`")
_DIRECTIVE = re.compile(r"^(\s*)\.\. math::\s*(.*)$")
_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.M)


def rest_math_to_markdown(text: str) -> str:
    """``text`` with ``:math:`x``` as ``$x$`` and ``.. math::`` blocks as ``$$`` blocks."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _DIRECTIVE.match(lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        indent, first = match.group(1), match.group(2).strip()
        body = [first] if first else []
        i += 1
        while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > len(indent)):
            body.append(lines[i].strip())
            i += 1
        while body and not body[-1]:
            body.pop()
        while body and not body[0]:
            body.pop(0)
        formula = [line for line in body if line]
        joined = "\n".join(formula)
        if ("&" in joined or "\\\\" in joined) and "\\begin" not in joined:
            # Sphinx aligns a multi-line display at its "&"s; so does a split environment
            formula = ["\\begin{split}"] + formula + ["\\end{split}"]
        if out and out[-1].strip():
            out.append("")
        out += [f"{indent}$$"] + [f"{indent}{line}" for line in formula] + [f"{indent}$$", ""]
    text = "\n".join(out)
    return _INLINE.sub(lambda m: f"${m.group(1)}$", text)


def roles_to_markdown(text: str, resolve) -> str:
    """``text`` with each Sphinx role as code, linked (optionally) to ``resolve(target)``."""

    def replace(match: re.Match) -> str:
        content = match.group(1)
        title, _, target = content.partition(" <")
        if target:
            target = target.rstrip(">")
        else:
            target = title = content
        target = target.lstrip("~!.")
        if title.startswith("~"):
            title = title.lstrip("~").rsplit(".", 1)[-1]
        title = title.lstrip("!.")
        identifier = resolve(target)
        code = f"<code>{title}</code>"
        if identifier is None:
            return f"`{title}`"
        return f'<autoref identifier="{identifier}" optional>{code}</autoref>'

    return _ROLE.sub(replace, text)


def _walk(obj):
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _walk(member)


class RestMath(griffe.Extension):
    """Rewrite each docstring once its package is loaded (see the module's docstring)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:  # noqa: D102
        for obj in list(_walk(pkg)):
            if obj.is_class:
                add_constructor(obj)
            doc = obj.docstring
            if doc is None:
                continue
            value = doc.value
            if "math::" in value or ":math:" in value:
                value = rest_math_to_markdown(value)
            if "Example:" in value:  # griffe reads "Examples:" as doctest code, "Example:" as prose
                value = _EXAMPLE.sub(r"\1Examples:", value)
            if "`" in value and _ROLE.search(value):
                value = roles_to_markdown(value, lambda name, obj=obj: _resolve(obj, name))
            doc.value = value


def _runtime(obj):
    """The live object for a griffe object (``None`` if it cannot be imported)."""
    try:
        value = importlib.import_module(obj.module.path)
        for part in obj.path[len(obj.module.path) + 1:].split("."):
            value = getattr(value, part)
    except Exception:  # noqa: BLE001 (any import failure: leave the class as griffe sees it)
        return None
    return value


_KINDS = {
    inspect.Parameter.POSITIONAL_ONLY: griffe.ParameterKind.positional_only,
    inspect.Parameter.POSITIONAL_OR_KEYWORD: griffe.ParameterKind.positional_or_keyword,
    inspect.Parameter.VAR_POSITIONAL: griffe.ParameterKind.var_positional,
    inspect.Parameter.KEYWORD_ONLY: griffe.ParameterKind.keyword_only,
    inspect.Parameter.VAR_KEYWORD: griffe.ParameterKind.var_keyword,
}


def _annotation(value) -> str | None:
    if value is inspect.Parameter.empty:
        return None
    return value if isinstance(value, str) else inspect.formatannotation(value)


def add_constructor(cls) -> None:
    """Give a class without an ``__init__`` of its own in the source (equinox modules and named
    tuples, whose ``__init__`` is generated at run time, and subclasses) its constructor's
    signature, from ``inspect.signature`` of the live class: griffe reads source only, and would
    show none (or, through inheritance, the base class's)."""
    if "__init__" in cls.members:  # written in the source: griffe has it, with richer annotations
        return
    live = _runtime(cls)
    if live is None:
        return
    try:
        signature = inspect.signature(live)
    except (TypeError, ValueError):
        return
    parameters = [griffe.Parameter("self", kind=griffe.ParameterKind.positional_or_keyword)]
    for p in signature.parameters.values():
        default = None if p.default is inspect.Parameter.empty else repr(p.default)
        parameters.append(griffe.Parameter(p.name, annotation=_annotation(p.annotation), kind=_KINDS[p.kind],
                                           default=default))
    init = griffe.Function("__init__", lineno=0, endlineno=0, parent=cls, parameters=griffe.Parameters(*parameters),
                           returns="None")
    cls.set_member("__init__", init)


def _resolve(obj, name: str) -> str | None:
    if name.startswith("invjax"):
        return name
    scope = obj if obj.is_class or obj.is_module else obj.parent
    head, _, tail = name.partition(".")
    while scope is not None:
        try:
            path = scope.resolve(head)
        except Exception:  # noqa: BLE001 (griffe's NameResolutionError and relatives)
            scope = scope.parent
            continue
        return f"{path}.{tail}" if tail else path
    return None
