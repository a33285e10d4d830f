"""Command line: `jaxvision train|eval|bench|models ...`.

    jaxvision train --config configs/quickstart.py --workdir runs/qs [--config.train.num_steps=200 ...]
    jaxvision eval  --config configs/quickstart.py --workdir runs/qs [--step N]
    jaxvision bench train --config configs/quickstart.py [--steps 20]
    jaxvision bench data  --config configs/quickstart.py [--batches 50]
    jaxvision bench attention [--out DIR] [--kinds vanilla,dct-0.25] [--lengths 128,1024] [--max-batch 8]
    jaxvision export --workdir DIR [--step N] | --model NAME --input HxW  --out FILE.onnx
                     [--format onnx|tensorrt|savedmodel] [--batch 1] [--dynamic-batch] [--opset 17]
                     [--layout nchw|nhwc] [--precision fp32|fp16] [--verify]
    jaxvision bench latency --workdir DIR | --model NAME [--input HxW] [--runs 1000] [--batch 8] [--json FILE]
    jaxvision models [--filter SUBSTRING]
    jaxvision profile --model resnet50 --input 1x224x224x3 [--model.num_classes=10 ...] [--json FILE]
    jaxvision convert-weights --from torchvision|timm --model resnet34 --in FILE.pth|.safetensors --out DIR
                              [--model.num_classes=0 ...]
    jaxvision sweep --config FILE --workdir DIR --sweep SWEEPFILE [--run 'TAG: --config.a=1 ...'] [--config.x=y ...]
    jaxvision saliency --workdir DIR [--step N] [--task distraction] [--target phone] [--num 8] [--out FILE.png]
    jaxvision pseudo-label --teacher DIR [--step N] --images ROOT --out LABELS.jsonl [--alpha A]

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

    def model_source(p):
        source = p.add_mutually_exclusive_group(required=True)
        source.add_argument("--workdir", help="training run (its config.json and checkpoint)")
        source.add_argument("--model", help="a registered model with fresh weights (deployment dry runs, latency)")
        p.add_argument("--input", default="224x224", help="HxW for --model (a run uses its config's size)")
        p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
        return p

    def with_config(p):
        p.add_argument("--config", required=True, help="config file (Python, get_config())")
        return p

    train = with_config(sub.add_parser("train", help="train (resumes from the workdir's latest checkpoint)"))
    train.add_argument("--workdir", required=True)
    ev = sub.add_parser("eval", help="evaluate a checkpoint; writes metrics tables and predictions")
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
    ba = bench_sub.add_parser("attention", help="thesis Table 4.1 / Figure 4.2: time and peak memory per attention kind")
    ba.add_argument("--out", default="bench_attention", help="folder for attention.md / .csv / .png")
    ba.add_argument("--parts", default="transformer,attention", help="transformer (Table 4.1), attention (Fig. 4.2)")
    ba.add_argument("--kinds", default=None, help="attention specs for both parts, e.g. vanilla,dct-0.25,fused")
    ba.add_argument("--lengths", default=None, help="Figure 4.2 sequence lengths (default 128,...,8192)")
    ba.add_argument("--max-batch", type=int, default=None, help="cap the batch (per-sample numbers stay comparable)")
    ba.add_argument("--max-gb", type=float, default=8.0, help="compile but do not run points above this peak")
    ba.add_argument("--repeats", type=int, default=10)
    ba.add_argument("--warmup", type=int, default=2)
    ba.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                    help="weights and activations (float32 as in the thesis)")
    ba.add_argument("--isolate", action="store_true",
                    help="run each point in its own process and measure its real peak memory (slower)")

    ex = model_source(sub.add_parser("export", help="checkpoint -> ONNX (+ sidecar JSON), TensorRT engine or "
                                                    "TF SavedModel"))
    ex.add_argument("--out", required=True,
                    help="output: .onnx, .engine for --format tensorrt, a folder for --format savedmodel")
    ex.add_argument("--format", default="onnx", choices=("onnx", "tensorrt", "savedmodel"))
    ex.add_argument("--batch", type=int, default=1, help="batch size of the graph (the optimum with --dynamic-batch)")
    ex.add_argument("--dynamic-batch", action="store_true", help="any batch size at run time")
    ex.add_argument("--opset", type=int, default=17, help="ONNX opset, 13-20 (17: TensorRT 8.5 / JetPack 5)")
    ex.add_argument("--layout", default=None, choices=("nchw", "nhwc"),
                    help="input layout (default nchw, which TensorRT prefers; nhwc for a SavedModel)")
    ex.add_argument("--precision", default="fp32", choices=("fp32", "fp16"), help="weights and compute")
    ex.add_argument("--verify", action="store_true",
                    help="run the exported graph (ONNX Runtime, TensorFlow) beside JAX; fail above tolerance")

    bl = bench_sub.add_parser("latency", help="inference latency: JAX jit vs ONNX Runtime (Tables 2.8 / 3.4)")
    model_source(bl)
    bl.add_argument("--runs", type=int, default=1000, help="calls at batch 1 (fewer at larger batches)")
    bl.add_argument("--batch", type=int, default=8, help="the batch for throughput (besides batch 1)")
    bl.add_argument("--json", default=None, help="also write the results to this JSON file")
    bl.add_argument("--forward-only", action="store_true",
                    help="time the network alone, without the task's decoding (as Table 3.4 does for ADAS)")

    ls = sub.add_parser("models", help="list the registered models with their parameter counts")
    ls.add_argument("--filter", default="", help="only names containing this substring")

    prof = sub.add_parser("profile", help="parameters and MACs per stage (analytic and XLA cost analysis)")
    prof.add_argument("--model", required=True, help="registered model name (see `jaxvision models`)")
    prof.add_argument("--input", default="1x224x224x3", help="input shape BxHxWxC (default 1x224x224x3)")
    prof.add_argument("--json", default=None, help="also write the profile to this JSON file")
    prof.add_argument("--no-xla", action="store_true", help="analytic counts only (skip the XLA compiles)")

    conv = sub.add_parser("convert-weights", help="import torchvision / timm weights (.pth, .safetensors)")
    conv.add_argument("--from", dest="source", required=True, choices=("torchvision", "timm"))
    conv.add_argument("--model", required=True, help="jaxvision model name (see `jaxvision models`)")
    conv.add_argument("--in", dest="in_path", required=True, help="PyTorch weight file: .pth/.pt or .safetensors")
    conv.add_argument("--out", required=True, help="new directory for the converted weights")

    sw = with_config(sub.add_parser("sweep", help="train + evaluate a list of runs, write results.md / results.csv"))
    sw.add_argument("--workdir", required=True, help="one folder per run tag, and the results table")
    sw.add_argument("--sweep", dest="sweep_file", help="file of 'TAG: --config.a=1 ...' lines (jaxvision/sweep.py)")
    sw.add_argument("--run", action="append", default=[], help="one more run 'TAG: --config.key=value ...'")
    sw.add_argument("--dry-run", action="store_true", help="check every run and show what is done / to resume / new")

    sal = sub.add_parser("saliency", help="saliency maps of a driver-monitoring run (thesis 2.4.1): gradient, Score-CAM")
    sal.add_argument("--workdir", required=True, help="driver-monitoring training run")
    sal.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    sal.add_argument("--task", default="distraction", help="eyes | mouth | distraction")
    sal.add_argument("--target", default=None, help="class (or eye label) to explain, by name; default: predicted")
    sal.add_argument("--num", type=int, default=8, help="validation faces to draw")
    sal.add_argument("--out", default=None, help="PNG to write (default: WORKDIR/saliency_TASK.png)")
    pl = sub.add_parser("pseudo-label", help="label distraction images with a DMS teacher run (thesis Eq. 2.4)")
    pl.add_argument("--teacher", required=True, help="DMS training run (workdir) used as the teacher")
    pl.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    pl.add_argument("--images", required=True, help="folder with phone/, smoking/ (see jaxvision/data/distraction.py)")
    pl.add_argument("--out", required=True, help="JSON Lines file of the pseudo labels")
    pl.add_argument("--alpha", type=float, default=None, help="alpha of Eq. 2.4 (default: distraction.DEFAULT_ALPHA)")
    return parser


def _cmd_bench_attention(args) -> None:
    from jaxvision import attention_bench as ab
    kinds = ab.parse_list(args.kinds) if args.kinds else None
    if kinds:
        ab.check_kinds(kinds)
    points = ab.run(parts=ab.parse_list(args.parts), table_kinds=kinds or ab.TABLE_KINDS,
                    figure_kinds=kinds or ab.FIGURE_KINDS,
                    lengths=ab.parse_list(args.lengths, int) if args.lengths else ab.FIGURE_LENGTHS,
                    max_batch=args.max_batch, max_bytes=args.max_gb * 2.0 ** 30, repeats=args.repeats,
                    warmup=args.warmup, isolate=args.isolate, dtype=args.dtype,
                    on_point=lambda points: ab.write_results(points, args.out, args.dtype, with_plot=False))
    print(ab.markdown(points))
    print("wrote " + ", ".join(ab.write_results(points, args.out, args.dtype)))


def _exportable(args):
    from jaxvision.export import exporter
    if args.workdir:
        return exporter.from_workdir(args.workdir, args.step, decode=not getattr(args, "forward_only", False))
    try:
        height, width = (int(v) for v in args.input.lower().split("x"))
    except ValueError:
        raise ValueError(f"--input '{args.input}' is not HxW (e.g. 224x224)") from None
    return exporter.from_registry(args.model, height, width, decode=not getattr(args, "forward_only", False))


def _cmd_export(args) -> None:
    from jaxvision.export import exporter
    exportable = _exportable(args)
    paths = exporter.export(exportable, args.out, args.format, args.batch, args.dynamic_batch, args.opset,
                            args.layout, args.precision, args.verify)
    print("wrote " + ", ".join(paths))


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
        written = [f for f in ("eval_metrics.md", "predictions.png", "predictions.md")
                   if os.path.exists(os.path.join(args.workdir, f))]
        print(f"wrote {', '.join(written)} in {os.path.abspath(args.workdir)}")
    elif args.command == "bench" and args.bench_command == "attention":
        _cmd_bench_attention(args)
    elif args.command == "bench" and args.bench_command == "latency":
        from jaxvision.export import latency
        result = latency.measure(_exportable(args), batches=(1, args.batch), runs=args.runs, log=lambda _: None)
        print(latency.format_table(result))
        if args.json:
            latency.write_json(result, args.json)
    elif args.command == "bench":
        from jaxvision.train import bench
        config = _load(args.config, overrides)
        if args.bench_command == "train":
            print(bench.format_report(bench.bench_train(config, args.steps, args.warmup)))
        else:
            print(bench.format_report(bench.bench_data(config, args.batches)))
    elif args.command == "export":
        _cmd_export(args)
    elif args.command == "models":
        print(_models_table(args.filter))
    elif args.command == "profile":
        _cmd_profile(args, overrides)
    elif args.command == "convert-weights":
        from jaxvision.convert import convert_weights
        from jaxvision.models.registry import options_from_args
        options = options_from_args(args.model, overrides)
        meta = convert_weights(args.in_path, args.model, args.source, args.out, **options)
        print(f"converted {args.source} weights {args.in_path} -> {os.path.abspath(args.out)}: "
              f"{args.model}, {meta['num_params']:,} parameters")
    elif args.command == "sweep":
        return _cmd_sweep(args, overrides)
    elif args.command == "saliency":
        _cmd_saliency(args)
    elif args.command == "pseudo-label":
        _cmd_pseudo_label(args)
    return 0


def _cmd_saliency(args) -> None:
    """Saliency maps of the first `--num` validation faces of a DMS run (thesis Sec. 2.4.1)."""
    import jax
    import numpy as np
    from jaxvision.data import pipeline
    from jaxvision.tasks import dms
    from jaxvision.train.loop import load_run
    if args.task not in dms.SALIENCY_TASKS:
        raise ValueError(f"--task {args.task}: choose one of {', '.join(dms.SALIENCY_TASKS)}")
    names = dms.SALIENCY_TASKS[args.task]
    if args.target is not None and args.target not in names:
        raise ValueError(f"--target {args.target}: {args.task} has {', '.join(names)}")
    config, model, state, step = load_run(args.workdir, args.step, tasks=("dms",))
    source = pipeline.get_source(config.data, "val")
    images = np.stack([source[i]["image"] for i in range(min(args.num, len(source)))])
    target = None if args.target is None else names.index(args.target)
    out = args.out or os.path.join(args.workdir, f"saliency_{args.task}.png")
    dms.save_saliency(out, model, jax.device_get(state.variables()), images, args.task, target)
    print(f"wrote {os.path.abspath(out)} (step {step}, {len(images)} faces)")


def _cmd_pseudo_label(args) -> None:
    """Pseudo-labels the images of `--images` with the DMS run `--teacher` (thesis Sec. 2.3.2, Eq. 2.4)."""
    import dataclasses
    import jax
    import numpy as np
    from jaxvision.data import distraction
    from jaxvision.export import exporter
    distraction.read_annotations(args.images)          # bad image folders fail before the teacher loads
    if not os.path.isdir(args.teacher):
        raise FileNotFoundError(f"teacher workdir not found: {args.teacher}")
    teacher = exporter.from_workdir(args.teacher, args.step)
    teacher = dataclasses.replace(teacher, fn=jax.jit(teacher.fn))
    alpha = distraction.DEFAULT_ALPHA if args.alpha is None else args.alpha
    records = distraction.pseudo_label(args.images, teacher, args.out, alpha)
    c = np.array([r["confidence"] for r in records])
    print(f"wrote {len(records)} pseudo labels to {os.path.abspath(args.out)}: confidence mean {c.mean():.3f}, "
          f"{(c < 0.5).sum()} below 0.5")


def _cmd_sweep(args, overrides: list[str]) -> int:
    """Runs the sweep of `--sweep` / `--run` (command-line overrides apply to every run); 1 if a run failed."""
    from jaxvision import sweep
    runs = sweep.parse_sweep_file(args.sweep_file) if args.sweep_file else []
    runs += [sweep.parse_run(text, f"--run {i + 1}") for i, text in enumerate(args.run)]
    title = os.path.basename(args.sweep_file) if args.sweep_file else ""
    rows = sweep.run_sweep(args.config, args.workdir, runs, overrides, dry_run=args.dry_run, title=title)
    if args.dry_run:
        print("\n".join(f"{r['tag']}: {r['status']}  {r['overrides']}" for r in rows))
        return 0
    results = os.path.join(os.path.abspath(args.workdir), "results.md")
    with open(results) as f:
        print(f.read())
    print(f"wrote {results} and results.csv")
    failed = [r["tag"] for r in rows if r["status"] != "done"]
    if failed:
        print(f"jaxvision: error: {len(failed)} run(s) did not finish: {', '.join(failed)}", file=sys.stderr)
    return EXIT_FAILED if failed else 0


def _cmd_profile(args, overrides: list[str]) -> None:
    """Prints the per-stage profile of `--model` (options `--model.KEY=VALUE`); writes it to `--json` if given."""
    from jaxvision import profile
    from jaxvision.models.registry import options_from_args
    options = options_from_args(args.model, overrides)
    result = profile.profile_model(args.model, profile.parse_input_shape(args.input), xla=not args.no_xla, **options)
    print(profile.format_profile(result))
    if args.json:
        profile.write_json(result, args.json)
        print(f"wrote {os.path.abspath(args.json)}")


def _param_count(name: str) -> int | None:
    """Parameters (not batch statistics) of model `name` with its defaults, from an abstract init on a
    1x64x64x3 image or, for text models, 1x16 token ids (shapes only, no compute); None when both fail."""
    import jax
    import jax.numpy as jnp
    from jaxvision import models
    for example in (jnp.zeros((1, 64, 64, 3)), jnp.ones((1, 16), jnp.int32)):
        try:
            model = models.create(name)
            variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), example, train=False))
        except Exception:  # noqa: BLE001  a model that cannot take this input: try the next, else no count
            continue
        return models.count_params(variables.get("params", {}))
    return None


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


def _user_error_exit(error: Exception) -> int | None:
    """The exit status for an error the user can fix (printed without a traceback), or None for a bug.
    The error classes are imported here, not at start-up, so commands that need no training stack
    (`bench attention`) run where only jax and flax are installed."""
    from jaxvision.config import ConfigError
    from jaxvision.train.checkpoint import CheckpointError
    from jaxvision.train.loop import Interrupted, NonFiniteLossError, WorkdirError

    if isinstance(error, ConfigError):
        print(f"jaxvision: config error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if isinstance(error, Interrupted):
        print(f"jaxvision: {error}", file=sys.stderr)
        return 128 + int(error.signum)
    user_errors = (WorkdirError, CheckpointError, NonFiniteLossError, FileNotFoundError, FileExistsError,
                   PermissionError, ValueError)
    if isinstance(error, user_errors):
        print(f"jaxvision: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `jaxvision` console script."""
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)  # Orbax's INFO/WARNING lines are noise on a terminal
    argv = sys.argv[1:] if argv is None else argv
    try:
        return run(argv)
    except Exception as e:  # noqa: BLE001 - user errors become a message and an exit status, bugs re-raise
        status = None if os.environ.get("JAXVISION_DEBUG") else _user_error_exit(e)  # full traceback for developers
        if status is None:
            raise
        return status


if __name__ == "__main__":
    sys.exit(main())
