"""`jaxvision bench attention`: memory accounting, the tables and the files it writes (tiny sizes)."""

import csv
import os

import jax
import jax.numpy as jnp
import pytest

from jaxvision import attention_bench as ab
from conftest import run_cli


def test_compiled_peak_counts_arguments_outputs_and_temporaries():
    # a [256, 64] @ a^T -> [256, 256] then softmax @ a -> [256, 64]: the [256, 256] matrix is a temporary.
    a = jax.ShapeDtypeStruct((256, 64), jnp.float32)
    compiled = jax.jit(lambda a: jax.nn.softmax(a @ a.T) @ a).lower(a).compile()
    peak = ab.compiled_peak_bytes(compiled)
    arg = out = 256 * 64 * 4
    assert arg + out + 256 * 256 * 4 <= peak <= arg + out + 3 * 256 * 256 * 4


def test_measure_skips_running_points_over_the_memory_limit():
    x = jnp.ones((1024,), jnp.float32)
    peak, ms, _, error = ab.measure(lambda x: x * 2, (x,), repeats=2, warmup=1, max_bytes=100)
    assert peak == 2 * 4096 and ms is None
    peak, ms, _, error = ab.measure(lambda x: x * 2, (x,), repeats=2, warmup=1, max_bytes=1e9)
    assert peak == 2 * 4096 and ms > 0 and error == ""


def test_isolated_run_measures_the_score_matrix_the_analysis_may_miss():
    # vanilla attention, batch 4, 8 heads, n = 512: the softmax scores alone are 4 * 8 * 512 * 512 float32s.
    peak, ms, measured, error = ab.measure_isolated("attention", "vanilla", 512, 4, repeats=1, warmup=0,
                                                    max_bytes=1e10)
    assert error == "" and ms > 0 and peak > 4 * 512 * 512 * 4  # the input and output at least
    assert measured >= 4 * 8 * 512 * 512 * 4
    peak, ms, measured, error = ab.measure_isolated("attention", "vanilla", 512, 4, repeats=1, warmup=0,
                                                    max_bytes=100)
    assert ms is None and measured is None and peak > 100  # over the limit: compiled, not run


def test_run_tables_and_files(tmp_path):
    points = ab.run(parts=("transformer", "attention"), table_kinds=("vanilla", "dct-0.25"),
                    figure_kinds=("vanilla", "dct-0.25"), lengths=(32, 64), table_shapes=((32, 4),), max_batch=2,
                    repeats=1, warmup=0, log=lambda _: None)
    assert [(p.part, p.kind, p.n, p.batch) for p in points] == [
        ("transformer", "vanilla", 32, 2), ("transformer", "dct-0.25", 32, 2),
        ("attention", "vanilla", 32, 2), ("attention", "dct-0.25", 32, 2),
        ("attention", "vanilla", 64, 2), ("attention", "dct-0.25", 64, 2)]
    assert all(p.ms is not None and p.peak_mb > 0 for p in points)
    vanilla, dct = points[4], points[5]
    # n = 64: DCT attends over 16 coefficients, so its compiled temporaries are smaller than the 64 x 64 softmax's.
    assert dct.peak_mb < vanilla.peak_mb
    table = ab.markdown(points)
    assert f" | {dct.peak_mb:,.2f} / {dct.ms:,.2f} ({dct.peak_mb / vanilla.peak_mb:.2f}x / " in table
    transformer = points[0]
    assert f"| vanilla | {transformer.peak_mb / 2:,.2f} / {transformer.ms / 2:,.2f} |" in table  # per sample
    paths = ab.write_results(points, str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["attention.csv", "attention.md", "attention.png"]
    rows = list(csv.DictReader(open(paths[1])))
    assert [(r["part"], r["kind"], int(r["n"])) for r in rows] == [(p.part, p.kind, p.n) for p in points]
    assert float(rows[5]["peak_mb"]) == pytest.approx(dct.peak_mb, abs=1e-3)


def test_cli_rejects_an_unknown_kind(tmp_path):
    proc = run_cli(["bench", "attention", "--out", str(tmp_path / "b"), "--kinds", "vanilla,sparse-0.5"], check=False)
    assert proc.returncode != 0 and "sparse-0.5" in proc.stderr
    assert not os.path.exists(tmp_path / "b")
