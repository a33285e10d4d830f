"""`jaxvision bench latency`: inference latency like thesis Tables 2.8 / 3.4, per runtime.

For one model (a training run's checkpoint or a registered model) it measures JAX (jit) and ONNX
Runtime (CPU, plus the CUDA / TensorRT execution providers when this ONNX Runtime has them) on the
same exported function: mean, p50 and p99 latency over `runs` single-image calls (1000 by default, as
in the thesis) and throughput at a larger batch; with parameters and MACs (XLA's cost analysis).
"""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np

from jaxvision.export import exporter
from jaxvision.fileio import write_atomic
from jaxvision.timing import time_calls


@dataclasses.dataclass
class Latency:
    runtime: str
    batch: int
    mean_ms: float
    p50_ms: float
    p99_ms: float

    @property
    def images_per_s(self) -> float:
        return 1e3 * self.batch / self.mean_ms


def summarise(runtime: str, batch: int, times: list[float]) -> Latency:
    t = np.asarray(times)
    return Latency(runtime, batch, float(t.mean()), float(np.percentile(t, 50)), float(np.percentile(t, 99)))


def onnx_providers() -> list[str]:
    """The execution providers to measure: CPU, and CUDA / TensorRT where this ONNX Runtime has them."""
    import onnxruntime as ort
    have = ort.get_available_providers()
    return [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in have] + ["CPUExecutionProvider"]


def measure(exportable: exporter.Exportable, batches=(1, 8), runs: int = 1000, warmup: int = 20,
            layout: str = "nchw", log=print) -> dict:
    """Latency rows for JAX and each ONNX Runtime provider at each batch (`runs` calls at batch 1, fewer at
    larger batches so each costs about the same), with parameters and MACs per image."""
    import onnxruntime as ort
    model = exporter.build_onnx(exportable, dynamic_batch=True, layout=layout)
    data = model.SerializeToString()
    fn = jax.jit(exporter.with_layout(exportable, layout))
    rows = []
    for batch in batches:
        n = max(20, runs // batch)
        x = np.random.default_rng(0).uniform(0, 255, exporter.input_shape(exportable, batch, layout)).astype(np.float32)
        xd = jax.device_put(x)
        rows.append(summarise(f"JAX jit ({jax.devices()[0].platform})", batch,
                              time_calls(lambda: jax.block_until_ready(fn(xd)), n, warmup)))
        log(_row(rows[-1]))
        for provider in onnx_providers():
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            session = ort.InferenceSession(data, options, providers=[provider])
            rows.append(summarise(f"ONNX Runtime ({provider.replace('ExecutionProvider', '')})", batch,
                                  time_calls(lambda: session.run(None, {"image": x}), n, warmup)))
            log(_row(rows[-1]))
    one = jax.ShapeDtypeStruct(exporter.input_shape(exportable, 1, layout), jnp.float32)
    cost = fn.lower(one).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return {"model": exportable.name, "input": [exportable.height, exportable.width], "parameters": exportable.parameters,
            "macs": float(cost.get("flops", float("nan"))) / 2, "device": jax.devices()[0].device_kind,
            "runs": runs, "rows": [dataclasses.asdict(r) | {"images_per_s": r.images_per_s} for r in rows]}


def _row(r: Latency) -> str:
    return (f"| {r.runtime} | {r.batch} | {r.mean_ms:.2f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
            f"{r.images_per_s:.1f} |")


def format_table(result: dict) -> str:
    """Markdown in the layout of thesis Tables 2.8 / 3.4."""
    head = (f"**{result['model']}** at {result['input'][0]}x{result['input'][1]}: "
            f"{result['parameters']:,} parameters, {result['macs'] / 1e6:,.1f} M MACs "
            f"per image (XLA); {result['device']}, {result['runs']} runs at batch 1\n\n"
            "| runtime | batch | mean ms | p50 ms | p99 ms | images/s |\n|---|---:|---:|---:|---:|---:|")
    return head + "\n" + "\n".join(_row(Latency(**{k: r[k] for k in ("runtime", "batch", "mean_ms", "p50_ms",
                                                                            "p99_ms")})) for r in result["rows"])


def write_json(result: dict, path: str) -> None:
    write_atomic(path, json.dumps(result, indent=2) + "\n")
