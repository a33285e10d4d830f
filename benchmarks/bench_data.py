"""Input-pipeline throughput: synthetic scene rendering alone, then the full train pipeline (render + augment + batch).

    python benchmarks/bench_data.py --height 128 --width 256 --batch-size 16 --threads 2

Prints one line: render ms/scene (single thread) and pipeline images/s.
"""

from __future__ import annotations

import argparse
import time

import ml_collections

from jaxvision.data import pipeline, synthetic


def render_ms_per_scene(height: int, width: int, num_scenes: int) -> float:
    """Mean wall time of `render_scene` (one thread), after one warm-up scene."""
    synthetic.render_scene(0, 0, height, width)
    start = time.perf_counter()
    for index in range(1, num_scenes + 1):
        synthetic.render_scene(0, index, height, width)
    return 1e3 * (time.perf_counter() - start) / num_scenes


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="grain worker threads (0: render in the caller)")
    parser.add_argument("--prefetch", type=int, default=4, help="batches read ahead")
    parser.add_argument("--num-batches", type=int, default=30)
    parser.add_argument("--num-scenes", type=int, default=200, help="scenes for the render-only timing")
    parser.add_argument("--no-augment", action="store_true", help="flip, scale-crop and colour jitter off")
    args = parser.parse_args(argv)
    augment = dict(flip=False, scale_range=(1.0, 1.0), color_jitter=0.0) if args.no_augment else \
        dict(flip=True, scale_range=(0.75, 1.25), color_jitter=0.2)
    config = ml_collections.ConfigDict(dict(
        name="synthetic_scenes", height=args.height, width=args.width, num_train=100_000, num_val=100,
        num_classes=19, augment=ml_collections.ConfigDict(augment), num_threads=args.threads, prefetch=args.prefetch))
    render_ms = render_ms_per_scene(args.height, args.width, args.num_scenes)
    rate = pipeline.measure_pipeline_throughput(config, args.batch_size, args.num_batches)
    print(f"data {args.height}x{args.width}: render {render_ms:.2f} ms/scene ({1e3 / render_ms:.0f} scenes/s, "
          f"1 thread); pipeline {rate:.1f} images/s (batch {args.batch_size}, threads {args.threads}, "
          f"augment {'off' if args.no_augment else 'on'})")


if __name__ == "__main__":
    main()
