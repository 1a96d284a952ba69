"""The API reference pages, generated from the ``__all__`` lists.

One page per public package or module of ``invjax`` (those in ``invjax.__all__`` first, in the
order of the layers, then any other subpackage with an ``__all__``, such as ``invjax.demo``),
and one entry (``::: path``, rendered by mkdocstrings) per name of its ``__all__``, grouped as
the package is: the names of a nested package's ``__all__`` (``invjax.learned.priors``) under
its heading, the others by the module that defines them. A name added to an ``__all__`` appears
on the next build without editing anything here.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
from dataclasses import dataclass, field

# the layers, top-down as a user meets them (DESIGN.md); packages not listed follow, sorted
ORDER = ("operators", "functionals", "solvers", "tuning", "learned", "sampling", "metrics", "noise", "phantoms", "demo")

# Public constants whose definitions carry no docstring yet (a bare assignment cannot hold one
# at run time; griffe reads the string literal after it). Each is listed, not excused silently:
# the reference shows their value. Remove an entry once its constant is documented.
KNOWN_UNDOCUMENTED: dict[str, str] = {}


@dataclass
class Page:
    module: str  # "invjax.operators"
    title: str
    path: str  # "reference/operators.md"
    groups: list[tuple[str, list[str]]] = field(default_factory=list)  # (heading, [identifier])
    markdown: str = ""


def _import(name):
    return importlib.import_module(name)


def public_packages() -> list[str]:
    """``invjax``, then its public subpackages and modules with an ``__all__`` (top level only:
    nested packages are groups of their parent's page)."""
    invjax = _import("invjax")
    listed = [n for n in invjax.__all__ if inspect.ismodule(getattr(invjax, n))]
    others = [
        info.name
        for info in pkgutil.iter_modules(invjax.__path__)
        if info.ispkg and not info.name.startswith("_") and info.name not in listed
        and hasattr(_import(f"invjax.{info.name}"), "__all__")
    ]
    names = listed + others
    ranked = sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))
    return ["invjax"] + [f"invjax.{n}" for n in ranked]


def nested_packages(module_name: str) -> list[str]:
    """The packages below ``module_name`` (any depth) that have an ``__all__``."""
    module = _import(module_name)
    if not hasattr(module, "__path__"):
        return []
    found = []
    for info in pkgutil.walk_packages(module.__path__, prefix=f"{module_name}."):
        if info.ispkg and not any(part.startswith("_") for part in info.name.split(".")):
            if hasattr(_import(info.name), "__all__"):
                found.append(info.name)
    return found


def identifier(module_name: str, name: str) -> str:
    """The path mkdocstrings renders ``module_name.name`` from: that path, unless a submodule
    of the same name shadows it for static analysis (``invjax.tuning.fit`` is both the function
    re-exported by the package and the module defining it): then the defining path
    (``invjax.tuning.fit.fit``)."""
    path = f"{module_name}.{name}"
    obj = getattr(_import(module_name), name)
    try:
        shadowed = importlib.util.find_spec(path) is not None
    except (ImportError, ValueError):
        shadowed = False
    if shadowed and not inspect.ismodule(obj) and hasattr(obj, "__qualname__"):
        return f"{obj.__module__}.{obj.__qualname__}"
    return path


def _groups(module_name: str) -> list[tuple[str, list[str]]]:
    module = _import(module_name)
    exported = [n for n in getattr(module, "__all__", ()) if not inspect.ismodule(getattr(module, n))]
    covered: set[str] = set()
    groups = []
    for sub in ([] if module_name == "invjax" else nested_packages(module_name)):
        subm = _import(sub)
        items = []
        for name in subm.__all__:
            obj = getattr(subm, name)
            if inspect.ismodule(obj):
                continue
            # the shortest public path: the parent's, where it re-exports the same object
            if name in exported and getattr(module, name) is obj:
                items.append(identifier(module_name, name))
                covered.add(name)
            else:
                items.append(identifier(sub, name))
        groups.append((f"`{sub}`", items))
    rest: dict[str, list[str]] = {}
    for name in exported:
        if name in covered:
            continue
        obj = getattr(module, name)
        home = getattr(obj, "__module__", None) or module_name
        parts = home.split(".")
        home = ".".join(parts[:next((i for i, p in enumerate(parts) if p.startswith("_")), len(parts))])
        if home.startswith(module_name + ".") or home == module_name:
            key = home if groups else ""
        else:  # re-exported from another package
            key = f"re-exported from `{'.'.join(home.split('.')[:2])}`"
        rest.setdefault(key, []).append(identifier(module_name, name))
    for key, items in rest.items():
        heading = key if key.startswith("re-exported") else (f"`{key}`" if key else "")
        groups.append((heading, items))
    return groups


def _title(module_name: str) -> str:
    return "invjax (top level)" if module_name == "invjax" else module_name.split(".", 1)[1]


def _markdown(page: Page) -> str:
    lines = [f"# `{page.module}`", ""]
    lines += [f"::: {page.module}", "    options:", "      show_root_heading: false", "      show_root_toc_entry: false",
              "      members: false", ""]
    if page.module == "invjax":
        invjax = _import("invjax")
        subs = [n for n in invjax.__all__ if inspect.ismodule(getattr(invjax, n))]
        lines += ["Subpackages: " + ", ".join(f"[`invjax.{n}`]({n}.md)" for n in subs) + ".", ""]
    grouped = any(heading for heading, _ in page.groups)
    for heading, items in page.groups:
        level = 3 if grouped else 2
        if heading:
            lines += [f"## {heading}", ""]
        for identifier in items:
            lines += [f"::: {identifier}", "    options:", f"      heading_level: {level}", ""]
    return "\n".join(lines)


def pages() -> list[Page]:
    """The reference's pages, their markdown filled in."""
    result = []
    for module_name in public_packages():
        stem = "invjax" if module_name == "invjax" else module_name.split(".", 1)[1]
        page = Page(module_name, _title(module_name), f"reference/{stem}.md", _groups(module_name))
        page.markdown = _markdown(page)
        result.append(page)
    return result


def index_markdown(pages_: list[Page]) -> str:
    lines = ["# API reference", "",
             "Generated from the docstrings, one page per package, every name of each `__all__` (grouped as the package "
             "is), with its signature, types and examples. `import invjax as ij` is the convention throughout.", "",
             "| package | names | summary |", "| --- | ---: | --- |"]
    for page in pages_:
        module = _import(page.module)
        count = sum(len(items) for _, items in page.groups)
        summary = (inspect.getdoc(module) or "").split("\n\n")[0].replace("\n", " ").replace("|", "\\|")
        lines.append(f"| [`{page.module}`]({page.path.split('/', 1)[1]}) | {count} | {summary} |")
    return "\n".join(lines) + "\n"


def public_names() -> dict[str, object]:
    """``{package.name: object}`` for every name of ``invjax.__all__``, of every (nested)
    subpackage's ``__all__`` and of the public modules in them (modules themselves excluded)."""
    found = {}
    queue = list(public_packages())
    for top in list(queue):
        queue += [p for p in nested_packages(top) if p not in queue]
    seen = set()
    while queue:
        name = queue.pop(0)
        if name in seen:
            continue
        seen.add(name)
        module = _import(name)
        for attr in getattr(module, "__all__", ()):
            obj = getattr(module, attr)
            if inspect.ismodule(obj):
                if obj.__name__ not in seen:
                    queue.append(obj.__name__)
                continue
            found[f"{name}.{attr}"] = obj
    return found


def _has_own_docstring(obj) -> bool | None:
    """True/False for classes and functions; None where Python keeps no docstring (constants)."""
    if inspect.isclass(obj):
        return bool((vars(obj).get("__doc__") or "").strip())
    if callable(obj):
        return bool((getattr(obj, "__doc__", None) or "").strip())
    return None


def undocumented() -> list[str]:
    """Public names without a docstring (constants: none after their assignment), less the
    listed ones."""
    missing = []
    constants = []
    for path, obj in public_names().items():
        has = _has_own_docstring(obj)
        if has is None:
            constants.append(path)
        elif not has:
            missing.append(path)
    if constants:
        import griffe

        from pathlib import Path

        package = griffe.load("invjax", search_paths=[str(Path(__file__).resolve().parents[2])],
                              docstring_parser="google", resolve_aliases=False)
        for path in constants:
            try:
                target = package[path.split(".", 1)[1]]
                doc = target.docstring
            except Exception:  # noqa: BLE001 (an alias griffe cannot follow: count it as missing)
                doc = None
            if not (doc and doc.value.strip()):
                missing.append(path)
    canonical = {_canonical(p) for p in KNOWN_UNDOCUMENTED}
    return sorted(p for p in missing if p not in KNOWN_UNDOCUMENTED and _canonical(p) not in canonical)


def _canonical(path: str) -> str:
    return path.rsplit(".", 1)[1]
