"""Throughput benchmarks: the jitted train step and the input pipeline, measured separately."""

from __future__ import annotations

import os
import platform
import time

import jax

from jaxvision.data import pipeline
from jaxvision.tasks import get_task, model_input_keys
from jaxvision.train import parallel
from jaxvision.train.loop import initial_state, build_model
from jaxvision.train.state import make_train_step


def bench_data(config, num_batches: int = 50) -> dict:
    """Images/s that the training input pipeline delivers (rendering + augmentation + batching)."""
    rate = pipeline.measure_pipeline_throughput(config.data, config.train.batch_size, num_batches)
    return {"pipeline_images_per_s": rate, **_context(config)}


def bench_train(config, num_steps: int = 20, warmup: int = 3) -> dict:
    """Train-step time and images/s on a fixed batch (compile excluded), plus the pipeline rate."""
    mesh = parallel.make_mesh()
    task, model = get_task(config), build_model(config)
    state = initial_state(config, model, mesh)
    step_fn = jax.jit(make_train_step(task.loss, config.train.grad_accum_steps, model_input_keys(task)),
                      donate_argnums=0)
    batches = pipeline.make_train_iterator(config.data, config.train.batch_size, config.seed, 0, 0, 1)
    batch = parallel.shard_batch(next(batches), mesh)
    compile_start = time.perf_counter()
    for _ in range(warmup):
        state, metrics = step_fn(state, batch)
    jax.block_until_ready(metrics)
    compile_seconds = time.perf_counter() - compile_start
    start = time.perf_counter()
    for _ in range(num_steps):
        state, metrics = step_fn(state, batch)
    jax.block_until_ready(metrics)
    step_seconds = (time.perf_counter() - start) / num_steps
    train_rate = config.train.batch_size / step_seconds
    data = bench_data(config, max(10, num_steps))
    return {"step_time_ms": 1e3 * step_seconds, "train_images_per_s": train_rate,
            "warmup_seconds": compile_seconds, **data,
            "pipeline_over_train": data["pipeline_images_per_s"] / train_rate}


def _context(config) -> dict:
    return {"model": f"{config.model.name}/{config.model.get('encoder', '')}",
            "input": (f"{config.data.height}x{config.data.width}" if "height" in config.data
                      else f"{config.data.max_len} tokens"), "batch_size": config.train.batch_size,
            "devices": f"{jax.device_count()}x{jax.devices()[0].device_kind}",
            "host": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus"}


def format_report(report: dict) -> str:
    """One `key: value` line per measurement."""
    lines = []
    for key, value in report.items():
        lines.append(f"{key}: {value:.2f}" if isinstance(value, float) else f"{key}: {value}")
    return "\n".join(lines)
