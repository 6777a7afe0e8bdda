"""The `rnnfast` command line (also `python -m rnnfast`):

  rnnfast demo    train a character-level LSTM language model and generate text
  rnnfast bench   time rnnfast against PyTorch and ONNX Runtime side by side
"""
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


def _demo(args):
    from . import demo
    from ._threads import set_num_threads

    if args.threads:
        set_num_threads(args.threads)
    demo.run(text_path=args.text, minutes=args.minutes, hidden=args.hidden, layers=args.layers,
             batch=args.batch, seq_len=args.seq_len, lr=args.lr, seed=args.seed,
             generate=args.generate, temperature=args.temperature, save=args.save,
             prefix=args.prefix, quiet=args.quiet)
    return 0


def _positive(kind):
    def parse(text):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    return parse


def main(argv=None):
    from .benchmark import shape_sets

    parser = argparse.ArgumentParser(prog="rnnfast", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="train a character-level LSTM language model, then generate")
    d.add_argument("--text", default=None, help="UTF-8 text file to learn (default: bundled corpus)")
    d.add_argument("--minutes", type=_positive(float), default=0.75,
                   help="training time budget in minutes (default 0.75)")
    d.add_argument("--hidden", type=_positive(int), default=256, help="LSTM hidden size (256)")
    d.add_argument("--layers", type=_positive(int), default=1, help="LSTM layers (1)")
    d.add_argument("--batch", type=_positive(int), default=32, help="parallel streams (32)")
    d.add_argument("--seq-len", type=_positive(int), default=64, help="BPTT chunk length (64)")
    d.add_argument("--lr", type=_positive(float), default=3e-3, help="Adam learning rate (3e-3)")
    d.add_argument("--seed", type=int, default=0, help="seed for init and sampling (0)")
    d.add_argument("--generate", type=int, default=400, help="characters to generate (400)")
    d.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (0.7)")
    d.add_argument("--prefix", default="The ", help="text the generation starts from")
    d.add_argument("--threads", type=int, default=None, help="threads (default: all CPUs)")
    d.add_argument("--save", default=None, help="save the trained model to this safetensors file (needs safetensors)")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=_demo)
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
