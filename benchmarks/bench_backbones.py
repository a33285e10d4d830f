"""CPU inference throughput of each backbone: jaxvision (jitted, float32) against the same torchvision / timm
model in PyTorch eager mode (float32, `torch.no_grad`, eval), in one process, same inputs and thread count.

    python benchmarks/bench_backbones.py [--batch 8] [--size 224] [--iters 10] [--models resnet18,resnet50]

Needs the `parity` extra (torch, torchvision, timm): `pip install -e .[parity]`. Both frameworks use
`--threads` threads (default: all cores): torch.set_num_threads, and XLA's CPU thread pool, which uses
all cores, so leave `--threads` at its default unless XLA_FLAGS limits it too. Each model first runs
warm-up calls (JAX compiles then), then the median of `--iters` timed calls of one batch is reported.
Prints a markdown table: model, images/s of each, JAX / PyTorch ratio, max |logit difference| with the
same (converted) weights.
"""

from __future__ import annotations

import argparse
import os
import statistics

import jax
import numpy as np

from jaxvision import models
from jaxvision.convert import convert_state_dict
from jaxvision.timing import time_calls

# jaxvision name -> (source, PyTorch name)
PAIRS = {
    "resnet18": ("torchvision", "resnet18"), "resnet50": ("torchvision", "resnet50"),
    "resnext50_32x4d": ("torchvision", "resnext50_32x4d"), "se_resnet50": ("timm", "seresnet50"),
    "mobilenet_v2": ("torchvision", "mobilenet_v2"), "efficientnet_b0": ("torchvision", "efficientnet_b0"),
    "regnet_y_400mf": ("torchvision", "regnet_y_400mf"), "regnet_x_800mf": ("torchvision", "regnet_x_800mf"),
    "vit_small_patch16": ("timm", "vit_small_patch16_224"), "vit_base_patch16": ("torchvision", "vit_b_16"),
}


def _torch_model(source: str, name: str):
    if source == "torchvision":
        import torchvision  # noqa: PLC0415
        return getattr(torchvision.models, name)().eval()
    import timm  # noqa: PLC0415
    return timm.create_model(name).eval()


def _median_seconds(fn, warmup: int, iters: int) -> float:
    return statistics.median(time_calls(fn, iters, warmup)) / 1e3


def bench_pair(name: str, batch: int, size: int, warmup: int, iters: int) -> dict:
    """images/s of jaxvision `name` and its PyTorch original on one random batch, and their max logit difference."""
    import torch  # noqa: PLC0415
    source, torch_name = PAIRS[name]
    torch_model = _torch_model(source, torch_name)
    model = models.create(name)
    variables = convert_state_dict({k: v.numpy() for k, v in torch_model.state_dict().items()}, model, source)
    x = np.random.default_rng(0).standard_normal((batch, size, size, 3)).astype(np.float32)

    apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
    variables, x_jax = jax.device_put((variables, x))
    jax_out = np.asarray(apply(variables, x_jax))
    jax_s = _median_seconds(lambda: apply(variables, x_jax).block_until_ready(), warmup, iters)

    x_torch = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    with torch.no_grad():
        torch_out = torch_model(x_torch).numpy()
        torch_s = _median_seconds(lambda: torch_model(x_torch), warmup, iters)
    return {"model": name, "pytorch": f"{source}:{torch_name}", "jax_img_s": batch / jax_s,
            "torch_img_s": batch / torch_s, "max_abs_diff": float(np.abs(jax_out - torch_out).max())}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--models", default=",".join(PAIRS), help="comma-separated jaxvision names")
    args = parser.parse_args(argv)
    import torch  # noqa: PLC0415
    torch.set_num_threads(args.threads)
    print(f"batch {args.batch}, {args.size}x{args.size}, float32, {args.threads} threads, torch {torch.__version__}, "
          f"jax {jax.__version__}, median of {args.iters} calls after {args.warmup} warm-up\n")
    print("| model | PyTorch model | jaxvision img/s | PyTorch eager img/s | JAX / PyTorch | max abs logit diff |")
    print("|---|---|---:|---:|---:|---:|")
    for name in args.models.split(","):
        r = bench_pair(name, args.batch, args.size, args.warmup, args.iters)
        print(f"| {r['model']} | {r['pytorch']} | {r['jax_img_s']:.1f} | {r['torch_img_s']:.1f} | "
              f"{r['jax_img_s'] / r['torch_img_s']:.2f} | {r['max_abs_diff']:.1e} |", flush=True)


if __name__ == "__main__":
    main()
