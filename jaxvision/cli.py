"""Command line: `jaxvision train|eval|bench|models ...`.

    jaxvision train --config configs/quickstart.py --workdir runs/qs [--config.train.num_steps=200 ...]
    jaxvision eval  --config configs/quickstart.py --workdir runs/qs [--step N]
    jaxvision bench train --config configs/quickstart.py [--steps 20]
    jaxvision bench data  --config configs/quickstart.py [--batches 50]
    jaxvision models [--filter SUBSTRING]

Errors a user can cause end with one line on stderr and a non-zero exit, not a traceback
(JAXVISION_DEBUG=1 shows the traceback).
"""

from __future__ import annotations

import argparse
import os
import sys

EXIT_USAGE, EXIT_FAILED = 2, 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxvision", description="jaxvision: efficient computer vision in JAX")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p):
        p.add_argument("--config", required=True, help="config file (Python, get_config())")
        return p

    train = with_config(sub.add_parser("train", help="train (resumes from the workdir's latest checkpoint)"))
    train.add_argument("--workdir", required=True)
    ev = sub.add_parser("eval", help="evaluate a checkpoint; writes metrics tables and predictions.png")
    ev.add_argument("--config", help="config file (default: the workdir's config.json)")
    ev.add_argument("--workdir", required=True)
    ev.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")

    bench = sub.add_parser("bench", help="measure throughput")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True)
    bt = with_config(bench_sub.add_parser("train", help="training images/s and step time, and the input pipeline"))
    bt.add_argument("--steps", type=int, default=20)
    bt.add_argument("--warmup", type=int, default=3)
    bd = with_config(bench_sub.add_parser("data", help="input pipeline images/s alone"))
    bd.add_argument("--batches", type=int, default=50)

    ls = sub.add_parser("models", help="list the registered models with their parameter counts")
    ls.add_argument("--filter", default="", help="only names containing this substring")
    return parser


def _load(config_path: str | None, overrides: list[str], workdir: str | None = None):
    from jaxvision.config import config_from_json, load_config, parse_overrides, apply_override
    if config_path:
        return load_config(config_path, overrides)
    config = config_from_json(os.path.join(workdir, "config.json"))
    for key, value in parse_overrides(overrides):
        apply_override(config, key, value)
    return config


def run(argv: list[str]) -> int:
    args, overrides = _parser().parse_known_args(argv)
    if args.command == "train":
        from jaxvision.train.loop import train_and_evaluate
        config = _load(args.config, overrides)
        results = train_and_evaluate(config, args.workdir)
        _print_results(config, results)
    elif args.command == "eval":
        from jaxvision.train.loop import evaluate
        config = _load(args.config, overrides, args.workdir)
        results = evaluate(config, args.workdir, args.step)
        _print_results(config, results)
        print(f"wrote {os.path.join(os.path.abspath(args.workdir), 'eval_metrics.md')} and predictions.png")
    elif args.command == "bench":
        from jaxvision.train import bench
        config = _load(args.config, overrides)
        if args.bench_command == "train":
            print(bench.format_report(bench.bench_train(config, args.steps, args.warmup)))
        else:
            print(bench.format_report(bench.bench_data(config, args.batches)))
    elif args.command == "models":
        print(_models_table(args.filter))
    return 0


def _param_count(name: str) -> int | None:
    """Parameters (not batch statistics) of model `name` with its defaults, from an abstract init on a
    1x64x64x3 input (shapes only, no compute); None when that init fails."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jaxvision import models
    try:
        model = models.create(name)
        variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)), train=False))
    except Exception:  # noqa: BLE001  a model that cannot take the small input is listed without a count
        return None
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables.get("params", {})))


def _models_table(substring: str = "") -> str:
    """Registered model names containing `substring` and their parameter counts ('-' where unknown)."""
    from jaxvision import models
    names = [n for n in models.list_models() if substring in n]
    if not names:
        return f"no registered model name contains '{substring}'"
    counts = [_param_count(n) for n in names]
    cells = ["-" if c is None else f"{c:,}" for c in counts]
    width = max(len("model"), *map(len, names))
    count_width = max(len("parameters"), *map(len, cells))
    lines = [f"{'model':<{width}}  {'parameters':>{count_width}}"]
    lines += [f"{n:<{width}}  {c:>{count_width}}" for n, c in zip(names, cells)]
    return "\n".join(lines)


def _print_results(config, results: dict) -> None:
    import jax
    from jaxvision.tasks import get_task
    if results and jax.process_index() == 0:
        print(get_task(config).format(results))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `jaxvision` console script."""
    from absl import logging as absl_logging
    from jaxvision.config import ConfigError
    from jaxvision.train.checkpoint import CheckpointError
    from jaxvision.train.loop import Interrupted, NonFiniteLossError, WorkdirError

    absl_logging.set_verbosity(absl_logging.ERROR)  # Orbax's INFO/WARNING lines are noise on a terminal
    user_errors = (WorkdirError, CheckpointError, NonFiniteLossError, FileNotFoundError, ValueError)
    argv = sys.argv[1:] if argv is None else argv
    try:
        return run(argv)
    except (ConfigError, Interrupted, *user_errors) as e:
        if os.environ.get("JAXVISION_DEBUG"):  # full traceback for developers
            raise
        if isinstance(e, ConfigError):
            print(f"jaxvision: config error: {e}", file=sys.stderr)
            return EXIT_USAGE
        if isinstance(e, Interrupted):
            print(f"jaxvision: {e}", file=sys.stderr)
            return 128 + int(e.signum)
        print(f"jaxvision: error: {e}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
