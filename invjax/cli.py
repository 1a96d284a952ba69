"""Command line: ``invjax demo`` runs the main job."""

import argparse


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="invjax", description="Differentiable inverse problems in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="deblur a phantom, tune the weight automatically, print a table, write a figure")
    demo.add_argument("--size", type=int, default=128, help="image size (default 128)")
    demo.add_argument("--noise", type=float, default=0.01, help="noise standard deviation (default 0.01)")
    demo.add_argument("--out", default="demo_output", help="folder for the figure (default demo_output)")
    demo.add_argument("--no-figure", action="store_true", help="skip the figure")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo

        if args.size < 16:
            parser.error(f"--size must be >= 16, got {args.size}")
        if args.noise <= 0:
            parser.error(f"--noise must be > 0, got {args.noise}")
        run_demo(n=args.size, sigma=args.noise, out=args.out, figure=not args.no_figure)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
