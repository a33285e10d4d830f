"""`jaxvision bench attention`: the thesis' Table 4.1 and Figure 4.2 (seed 000, section 4.5.2).

* Table 4.1: forward time and peak memory per sample of the whole BERT-small-like transformer (4 blocks,
  8 heads, width 512, FFN 2048, 30,522-token vocabulary) at (n, batch) = (128, 256), (512, 32), (1024, 16),
  (4096, 1), for each attention kind.
* Figure 4.2: the attention module alone (width 512, 8 heads), batch 16, n from 128 to 8192.

Peak memory is the compiled executable's memory analysis (arguments + outputs + temporaries - aliased),
known without running it. With `isolate=True` (`--isolate`) each point also runs in a fresh process that
measures its real peak: the device's `peak_bytes_in_use` where it reports memory statistics (GPU), else
the resident-set high-water mark (`VmHWM`, reset through /proc/self/clear_refs after compiling) above the
resident set before the run, plus the argument bytes. That catches allocations the analysis does not see
(XLA:CPU's dot kernels take scratch outside it). Time is the median wall time of `repeats` runs after `warmup` runs. Points whose compiled
peak exceeds `max_bytes` are compiled (so their memory is reported) but not run; a point whose run fails
(e.g. an allocation the compiled analysis does not see, such as a CPU dot kernel's scratch) is recorded as
failed and the others go on.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import re
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp

from jaxvision.fileio import atomic_path, write_atomic
from jaxvision.layers.efficient_attention import make_attention, parse_attention_spec
from jaxvision.models.bert import BertEncoder

TABLE_KINDS = ("vanilla", "dct-0.25", "linformer-0.125", "nystrom-0.125", "performer-0.125")
TABLE_SHAPES = ((128, 256), (512, 32), (1024, 16), (4096, 1))
FIGURE_KINDS = TABLE_KINDS + ("fused",)
FIGURE_LENGTHS = (128, 256, 512, 1024, 2048, 4096, 8192)
FIGURE_BATCH = 16
WIDTH, HEADS, DEPTH, MLP_DIM, VOCAB = 512, 8, 4, 2048, 30522
MB = 2.0 ** 20


@dataclasses.dataclass
class Point:
    """One measurement; `ms` is None when the point was only compiled (over the memory limit)."""

    part: str          # 'transformer' (Table 4.1) or 'attention' (Figure 4.2)
    kind: str
    n: int
    batch: int         # the batch that was measured
    peak_mb: float     # compiled peak, whole batch
    ms: float | None   # median forward time, whole batch
    measured_mb: float | None = None   # measured peak of the run in its own process (isolate=True)
    error: str = ""    # why a compiled point did not run to the end (e.g. an allocation failure)

    @property
    def memory_mb(self) -> float:
        """The measured peak where there is one (isolated runs), else the compiled one; whole batch."""
        return self.peak_mb if self.measured_mb is None else self.measured_mb

    @property
    def mb_per_sample(self) -> float:
        return self.memory_mb / self.batch

    @property
    def ms_per_sample(self) -> float | None:
        return None if self.ms is None else self.ms / self.batch


def compiled_peak_bytes(compiled) -> int:
    """Arguments + outputs + temporaries - aliased bytes of a compiled executable."""
    m = compiled.memory_analysis()
    return m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes


def _device_peak() -> int | None:
    stats = jax.devices()[0].memory_stats()
    return None if not stats or "peak_bytes_in_use" not in stats else int(stats["peak_bytes_in_use"])


def _proc_status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M).group(1))


def _reset_rss_watermark() -> bool:
    """Resets this process's VmHWM to its current resident set (Linux >= 4.0); False where that is unavailable."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure(fn, args: tuple, repeats: int, warmup: int, max_bytes: float, measure_peak: bool = False) -> tuple:
    """(compiled peak bytes, median ms or None, measured peak bytes or None, error) of jit(fn)(*args).

    error is '' or the runtime's message when running failed (e.g. an allocation the analysis does not see).
    `measure_peak` (meant for a fresh process, see `measure_isolated`) also measures the run's real peak."""
    compiled = jax.jit(fn).lower(*args).compile()
    peak = compiled_peak_bytes(compiled)
    if peak > max_bytes:
        return peak, None, None, ""
    on_device = _device_peak() is not None
    rss_reset = measure_peak and not on_device and _reset_rss_watermark()
    rss_before = _proc_status_kb("VmRSS") * 1024 if rss_reset else 0
    times = []
    try:
        for i in range(warmup + repeats):
            start = time.perf_counter()
            jax.block_until_ready(compiled(*args))
            if i >= warmup:
                times.append(time.perf_counter() - start)
    except jax.errors.JaxRuntimeError as e:
        return peak, None, None, " ".join(str(e).split())[:120]
    measured = None
    if measure_peak and on_device:
        measured = _device_peak()
    elif rss_reset:
        arg_bytes = sum(x.nbytes for x in jax.tree_util.tree_leaves(args))
        measured = arg_bytes + _proc_status_kb("VmHWM") * 1024 - rss_before
    return peak, 1e3 * statistics.median(times), measured, ""


def measure_isolated(part: str, kind: str, n: int, batch: int, repeats: int, warmup: int, max_bytes: float,
                     dtype: str = "float32") -> tuple:
    """`measure` of one point in a fresh Python process, so that its measured peak is its own."""
    job = dict(part=part, kind=kind, n=n, batch=batch, repeats=repeats, warmup=warmup, max_bytes=max_bytes,
               dtype=dtype)
    proc = subprocess.run([sys.executable, "-m", "jaxvision.attention_bench", json.dumps(job)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or [f"exit status {proc.returncode}"]
        return 0, None, None, f"isolated run failed: {lines[-1][:120]}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result["peak"], result["ms"], result["measured"], result["error"]


def _cast(params, dtype: str):
    return jax.tree_util.tree_map(lambda a: a.astype(dtype), params)


def attention_case(kind: str, n: int, batch: int, dtype: str = "float32", seed: int = 0) -> tuple:
    """(fn, args) for the attention module alone on x [batch, n, 512], weights and activations in `dtype`."""
    module = make_attention(kind, HEADS, dtype=jnp.dtype(dtype))
    x = jax.random.normal(jax.random.PRNGKey(seed), (batch, n, WIDTH), dtype)
    params = _cast(jax.jit(lambda: module.init(jax.random.PRNGKey(1), x[:1], None, False))(), dtype)
    return (lambda p, x: module.apply(p, x, None, False)), (params, x)


def transformer_case(kind: str, n: int, batch: int, dtype: str = "float32", seed: int = 0) -> tuple:
    """(fn, args) for the BERT-small-like encoder on random token ids [batch, n], computing in `dtype`."""
    model = BertEncoder(VOCAB, n, WIDTH, DEPTH, HEADS, MLP_DIM, attention=kind, dtype=jnp.dtype(dtype))
    tokens = jax.random.randint(jax.random.PRNGKey(seed), (batch, n), 1, VOCAB)
    params = _cast(jax.jit(lambda: model.init(jax.random.PRNGKey(1), tokens[:1], False))(), dtype)
    return (lambda p, t: model.apply(p, t, False)), (params, tokens)


CASES = {"transformer": transformer_case, "attention": attention_case}


def run(parts=("transformer", "attention"), table_kinds=TABLE_KINDS, figure_kinds=FIGURE_KINDS,
        lengths=FIGURE_LENGTHS, table_shapes=TABLE_SHAPES, max_batch: int | None = None, max_bytes: float = 8 * 2.0 ** 30,
        repeats: int = 10, warmup: int = 2, isolate: bool = False, dtype: str = "float32", log=print,
        on_point=None) -> list[Point]:
    """Measures the requested parts ('transformer': `table_kinds` at `table_shapes` (n, batch); 'attention':
    `figure_kinds` at `lengths`, batch 16); `max_batch` caps the batch (per-sample figures stay comparable);
    `isolate` runs each point in its own process and measures its real peak memory too; `dtype` is the
    weights' and activations' type (float32 as in the thesis, or bfloat16); `on_point(points)` is called
    after each point (the CLI rewrites its tables then, so a stopped run keeps what it measured)."""
    jobs = []
    if "transformer" in parts:
        jobs += [("transformer", kind, n, batch) for n, batch in table_shapes for kind in table_kinds]
    if "attention" in parts:
        jobs += [("attention", kind, n, FIGURE_BATCH) for n in lengths for kind in figure_kinds]
    points = []
    for i, (part, kind, n, batch) in enumerate(jobs, 1):
        batch = min(batch, max_batch) if max_batch else batch
        if isolate:
            peak, ms, measured, error = measure_isolated(part, kind, n, batch, repeats, warmup, max_bytes, dtype)
        else:
            peak, ms, measured, error = measure(*CASES[part](kind, n, batch, dtype), repeats=repeats, warmup=warmup,
                                                max_bytes=max_bytes)
        point = Point(part, kind, n, batch, peak / MB, ms, None if measured is None else measured / MB, error)
        points.append(point)
        timing = (f"failed: {point.error}" if point.error else
                  "not run (over the memory limit)" if point.ms is None else f"{point.ms:.2f} ms")
        real = "" if point.measured_mb is None else f" (measured {point.measured_mb:.1f} MB)"
        log(f"[{i}/{len(jobs)}] {part} {kind} n={n} batch={batch}: {point.peak_mb:.1f} MB{real}, {timing}")
        if on_point is not None:
            on_point(points)
    return points


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def markdown(points: list[Point]) -> str:
    """Per-sample MB / ms tables: Table 4.1 (kinds x (n, batch)) and Figure 4.2 (kinds x n), with ratios to vanilla."""
    out = []
    for part, title in (("transformer", "Whole transformer, per sample: peak MB / forward ms (thesis Table 4.1)"),
                        ("attention", f"Attention module alone, batch {FIGURE_BATCH}: peak MB / forward ms "
                                      "(thesis Figure 4.2)")):
        rows = [p for p in points if p.part == part]
        if not rows:
            continue
        columns = sorted({(p.n, p.batch) for p in rows})
        kinds = list(dict.fromkeys(p.kind for p in rows))
        cell = {(p.kind, p.n, p.batch): p for p in rows}
        out += [f"### {title}", "", "| attention | " + " | ".join(f"n={n}, b={b}" for n, b in columns) + " |",
                "|---|" + "---:|" * len(columns)]
        for kind in kinds:
            cells = []
            for n, b in columns:
                p, base = cell.get((kind, n, b)), cell.get(("vanilla", n, b))
                if p is None:
                    cells.append("")
                    continue
                mb, ms = (p.mb_per_sample, p.ms_per_sample) if part == "transformer" else (p.memory_mb, p.ms)
                text = "failed" if p.error else f"{_fmt(mb)} / {_fmt(ms)}"
                if base is not None and kind != "vanilla" and p.ms is not None and base.ms is not None:
                    text += f" ({p.memory_mb / base.memory_mb:.2f}x / {p.ms / base.ms:.2f}x)"
                cells.append(text)
            out.append(f"| {kind} | " + " | ".join(cells) + " |")
        out.append("")
    measured = any(p.measured_mb is not None for p in points)
    out.append("(a / b): memory / time relative to vanilla at the same point; '-': compiled only, not run; "
               "failed: see attention.csv. Memory: " + ("the measured peak of each point in its own process "
               "(compiled analysis in attention.csv)." if measured else "the compiled executable's analysis."))
    return "\n".join(out) + "\n"


def to_csv(points: list[Point]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["part", "kind", "n", "batch", "peak_mb", "ms", "mb_per_sample", "ms_per_sample",
                     "measured_mb", "error"])
    for p in points:
        writer.writerow([p.part, p.kind, p.n, p.batch, f"{p.peak_mb:.3f}", _fmt(p.ms, 3),
                         f"{p.mb_per_sample:.3f}", _fmt(p.ms_per_sample, 4), _fmt(p.measured_mb, 3), p.error])
    return buf.getvalue()


def plot(points: list[Point], path: str) -> None:
    """Figure 4.2 as a PNG: attention-module memory and time against n, log-log, one line per kind."""
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [p for p in points if p.part == "attention"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for kind in dict.fromkeys(p.kind for p in rows):
        mine = sorted((p for p in rows if p.kind == kind), key=lambda p: p.n)
        axes[0].plot([p.n for p in mine], [p.memory_mb for p in mine], marker="o", label=kind)
        timed = [p for p in mine if p.ms is not None]
        axes[1].plot([p.n for p in timed], [p.ms for p in timed], marker="o", label=kind)
    lengths = sorted({p.n for p in rows})
    memory = "measured" if any(p.measured_mb is not None for p in rows) else "compiled"
    for ax, label in zip(axes, (f"peak memory (MB, {memory})", "forward time (ms, median)")):
        ax.set(yscale="log", xlabel="sequence length n", ylabel=label)
        ax.set_xscale("log", base=2)
        ax.set_xticks(lengths, [str(n) for n in lengths])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Attention module alone, batch {FIGURE_BATCH}, width {WIDTH}, {HEADS} heads "
                 f"({jax.devices()[0].device_kind})")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def write_results(points: list[Point], out_dir: str, dtype: str = "float32", with_plot: bool = True) -> list[str]:
    """Writes attention.md, attention.csv and (with Figure 4.2 points and `with_plot`) attention.png."""
    os.makedirs(out_dir, exist_ok=True)
    device = f"{jax.device_count()}x {jax.devices()[0].device_kind}, jax {jax.__version__}, {dtype}"
    paths = [os.path.join(out_dir, "attention.md"), os.path.join(out_dir, "attention.csv")]
    write_atomic(paths[0], f"# Attention benchmark ({device})\n\n" + markdown(points))
    write_atomic(paths[1], to_csv(points))
    if with_plot and any(p.part == "attention" for p in points):
        paths.append(os.path.join(out_dir, "attention.png"))
        plot(points, paths[-1])
    return paths


def parse_list(text: str, kind=str) -> tuple:
    """'a,b,c' -> (a, b, c) converted by `kind`."""
    return tuple(kind(x) for x in text.split(",") if x.strip())


def check_kinds(kinds) -> None:
    """Raises ValueError naming a spec that `make_attention` does not know."""
    for kind in kinds:
        parse_attention_spec(kind)


def _main(job_json: str) -> None:
    """Child of `measure_isolated`: measures one point and prints its result as one JSON line."""
    job = json.loads(job_json)
    peak, ms, measured, error = measure(*CASES[job["part"]](job["kind"], job["n"], job["batch"], job["dtype"]),
                                        repeats=job["repeats"], warmup=job["warmup"], max_bytes=job["max_bytes"],
                                        measure_peak=True)
    print(json.dumps(dict(peak=peak, ms=ms, measured=measured, error=error)))


if __name__ == "__main__":
    _main(sys.argv[1])
