"""Forward-pass latency of registered models under JAX jit, float32 and bfloat16 compute (Tables 2.8 / 3.4).

The thesis times the forward pass only (no decoding) with TensorRT FP16 on Jetson boards; this measures the same
forward pass on whatever accelerator JAX sees, mean / p50 / p99 over `--runs` calls at batch 1 plus throughput at
`--batch`, with fresh weights (latency does not depend on their values).

    python benchmarks/forward_latency.py --model cerberus_mbv2_bifpn --input 320x640 --json out.json
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np

from jaxvision import models
from jaxvision.export.latency import summarise
from jaxvision.timing import time_calls


def forward_latency(name: str, height: int, width: int, dtype, batches=(1, 8), runs: int = 1000) -> list[dict]:
    """Latency rows of model `name` with compute `dtype` at each batch size."""
    model = models.create(name, dtype=dtype)
    variables = jax.jit(lambda x: model.init(jax.random.PRNGKey(0), x, train=False))(jnp.zeros((1, height, width, 3)))
    forward = jax.jit(lambda v, x: model.apply(v, x, train=False))
    rows = []
    for batch in batches:
        x = jax.device_put(np.random.default_rng(0).uniform(0, 1, (batch, height, width, 3)).astype(np.float32))
        times = time_calls(lambda: jax.block_until_ready(forward(variables, x)), max(20, runs // batch), 20)
        row = summarise(f"JAX jit {jnp.dtype(dtype).name} ({jax.devices()[0].device_kind})", batch, times)
        rows.append({"model": name, "runtime": row.runtime, "batch": batch, "mean_ms": row.mean_ms,
                     "p50_ms": row.p50_ms, "p99_ms": row.p99_ms, "images_per_s": row.images_per_s})
        print(f"| {name} | {row.runtime} | {batch} | {row.mean_ms:.2f} | {row.p50_ms:.2f} | {row.p99_ms:.2f} | "
              f"{row.images_per_s:.1f} |", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="registered model name (repeatable)")
    parser.add_argument("--input", default="320x640", help="HxW")
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    height, width = (int(v) for v in args.input.lower().split("x"))
    print("| model | runtime | batch | mean ms | p50 ms | p99 ms | images/s |\n|---|---|---:|---:|---:|---:|---:|")
    rows = [row for name in args.model for dtype in (jnp.float32, jnp.bfloat16)
            for row in forward_latency(name, height, width, dtype, (1, args.batch), args.runs)]
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"input": [height, width], "runs": args.runs, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
