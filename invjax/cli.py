"""Command line: ``invjax demo`` runs the main job, ``invjax bench`` a benchmark script.

    invjax demo [--task deblur|inpaint|ct|mri|all] [--size N] [--out DIR] [--seed S]
    invjax bench              # list the benchmark scripts
    invjax bench NAME [ARGS]  # run benchmarks/NAME.py ARGS and print its table

Bad input ends with exit status 2 and one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
import tempfile
from pathlib import Path

from .demo import DEFAULT_SIZE, MIN_SIZE, TASKS, run_demo


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage block): ``invjax demo: error: ...``."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _int(minimum: int):
    """An argparse type: an integer ``>= minimum``."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value}")
        return value

    return parse


def _parser() -> _Parser:
    parser = _Parser(prog="invjax", description="Differentiable inverse problems in JAX.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{demo,bench}")
    demo = sub.add_parser(
        "demo", help="reconstruct four imaging problems, tune TV without the ground truth, compare learned models",
        description="Deblurring, inpainting, sparse-view CT and MRI: the baseline, TV with the weight chosen by SURE "
                    "(and the discrepancy principle) against the grid oracle, the shipped learned models. Prints a "
                    "table per task and its own wall time; writes demo.json, demo_<task>.png and demo_<task>.npz.")
    demo.add_argument("--task", default="all", choices=TASKS + ("all",), help="which problem (default: all)")
    demo.add_argument("--size", type=_int(MIN_SIZE), default=DEFAULT_SIZE,
                      help=f"image size N (N x N, N >= {MIN_SIZE}; default {DEFAULT_SIZE})")
    demo.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    demo.add_argument("--seed", type=_int(0), default=0, help="seed of noise, masks, probes (default 0)")
    demo.add_argument("--jobs", type=_int(1), default=None,
                      help="processes, this one included (default: one per usable core, at most one per task)")
    demo.add_argument("--no-figure", action="store_true", help="skip the PNG panels")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    bench = sub.add_parser("bench", help="list the benchmark scripts, or run one and print its table",
                           description="Without NAME: list benchmarks/*.py. With NAME: run benchmarks/NAME.py with the "
                                       "remaining arguments (this needs the source checkout).")
    bench.add_argument("name", nargs="?", help="benchmark script, with or without .py")
    bench.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed on to the script")
    parser.commands = {"demo": demo, "bench": bench}
    return parser


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _demo(parser, args)
    return _bench(parser, args)


# ---- demo ----------------------------------------------------------------------------------------
def _writable(folder: str) -> str | None:
    """``None`` if ``folder`` exists (or was created) and takes a file, else why not."""
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".invjax-write-test-"):
            pass
    except OSError as err:
        return f"cannot write to the output folder {folder!r} ({err.strerror or err})"
    return None


def _demo(parser, args) -> int:
    problem = _writable(args.out)
    if problem:
        parser.commands["demo"].error(problem)
    names = TASKS if args.task == "all" else (args.task,)
    try:
        run_demo(names, size=args.size, seed=args.seed, out=args.out, figure=not args.no_figure,
                 progress=not args.quiet, jobs=args.jobs)
    except KeyboardInterrupt:
        print("invjax demo: interrupted", file=sys.stderr)
        return 130
    except (ImportError, OSError) as err:  # a missing optional package or an unwritable file
        print(f"invjax demo: error: {err}", file=sys.stderr)
        return 1
    return 0


# ---- bench ---------------------------------------------------------------------------------------
def _bench_folder() -> Path | None:
    folder = Path(__file__).resolve().parent.parent / "benchmarks"
    return folder if folder.is_dir() else None


def benchmarks(folder: Path) -> dict[str, str]:
    """``{name: first line of its docstring}`` for the scripts ``folder/*.py`` (not ``_*.py``)."""
    found = {}
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_"):
            continue
        try:
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        except (SyntaxError, OSError, UnicodeDecodeError):
            doc = ""
        found[path.stem] = doc.strip().splitlines()[0] if doc.strip() else ""
    return found


def _bench(parser, args) -> int:
    bench_parser = parser.commands["bench"]
    folder = _bench_folder()
    if folder is None:
        bench_parser.error("no benchmarks/ folder next to the package (the scripts live in the source checkout)")
    available = benchmarks(folder)
    if args.name is None:
        width = max(map(len, available), default=0)
        print(f"benchmarks in {folder}/ (run one with: invjax bench NAME [ARGS]):")
        for name, doc in available.items():
            print(f"  {name:<{width}}  {doc}")
        return 0
    name = args.name[:-3] if args.name.endswith(".py") else args.name
    if name not in available:
        bench_parser.error(f"unknown benchmark {args.name!r}; choose from {', '.join(available)}")
    cmd = [sys.executable, str(folder / f"{name}.py"), *args.args]
    print(f"invjax bench: python benchmarks/{name}.py {' '.join(args.args)}".rstrip(), file=sys.stderr, flush=True)
    try:
        return subprocess.run(cmd, cwd=folder.parent).returncode
    except KeyboardInterrupt:
        print("invjax bench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
