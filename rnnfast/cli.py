"""The `rnnfast` command line: `rnnfast bench` (and `python -m rnnfast bench`)."""
import argparse
import sys


def _bench(args):
    from . import benchmark

    result = benchmark.run(sets=args.set, threads=args.threads, budget_s=args.budget,
                           filter_text=args.filter, progress=not args.quiet)
    if args.json:
        benchmark.save_json(result, args.json)
        print(f"wrote {args.json}")
    if args.plot:
        try:
            benchmark.plot(result, args.plot)
            print(f"wrote {args.plot}")
        except ImportError:
            print("--plot needs matplotlib (pip install matplotlib)", file=sys.stderr)
            return 1
    return 0


def main(argv=None):
    from .benchmark import shape_sets

    parser = argparse.ArgumentParser(prog="rnnfast", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bench", help="time rnnfast against PyTorch and ONNX Runtime side by side")
    b.add_argument("--set", action="append", choices=list(shape_sets()),
                   help="shape set to run (repeatable; default: all)")
    b.add_argument("--threads", type=int, default=None,
                   help="threads for every framework (default: rnnfast's current setting)")
    b.add_argument("--filter", default=None, help="only shapes whose label contains this text")
    b.add_argument("--budget", type=float, default=1.5,
                   help="seconds of timing per framework and shape (default 1.5)")
    b.add_argument("--json", default=None, help="write the results to this JSON file")
    b.add_argument("--plot", default=None, help="write a PNG bar chart (needs matplotlib)")
    b.add_argument("--quiet", action="store_true", help="no progress line on stderr")
    b.set_defaults(func=_bench)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
