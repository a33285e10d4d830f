"""TensorFlow SavedModel export (jax2tf): core-op substitutes, parity with JAX, sidecar, atomic writes, errors."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from scipy import special

from jaxvision.export import exporter, savedmodel
from jaxvision.export.onnx_graph import ExportError
from jaxvision.export.portable import polynomial_erf, portable, sorted_top_k
from conftest import IMAGE_MODELS, ROOT, cli_env, run_cli

needs_tf = pytest.mark.skipif(savedmodel.tensorflow_missing() is not None,
                              reason=f"SavedModel: {savedmodel.tensorflow_missing()}")


def test_asking_for_tensorflow_does_not_load_it():
    """TensorFlow loaded before triton (torchvision imports it) segfaults the process: the skip check at
    collection must leave it unloaded for the PyTorch parity tests."""
    code = ("import sys; from jaxvision.export import savedmodel; savedmodel.tensorflow_missing(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'tensorflow'))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def test_sorted_top_k_equals_lax_top_k_with_ties():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 50)).astype(np.float32)
    x[:, 10:20] = 0.5                                 # a plateau: ties are taken lower index first
    x[1, :] = 0.0
    for k in (1, 7, 50):
        values, idx = sorted_top_k(jnp.asarray(x), k)
        ref_values, ref_idx = lax.top_k(x, k)
        np.testing.assert_array_equal(values, ref_values)
        np.testing.assert_array_equal(idx, ref_idx)
        assert idx.dtype == jnp.int32
    values, idx = sorted_top_k(jnp.asarray(x.T), 4, axis=0)
    np.testing.assert_array_equal(values, lax.top_k(x, 4)[0].T)
    np.testing.assert_array_equal(idx, lax.top_k(x, 4)[1].T)


def test_polynomial_erf_within_its_bound():
    x = np.linspace(-6, 6, 100_001).astype(np.float32)
    exact = special.erf(x.astype(np.float64))
    ours = np.asarray(polynomial_erf(jnp.asarray(x)), np.float64)
    assert np.abs(ours - exact).max() < 3.5e-7        # 1.5e-7 of A&S plus float32 rounding (lax.erf: 2.9e-7)
    small = (np.abs(x) < 0.5) & (x != 0)
    assert (np.abs(ours - exact)[small] / np.abs(exact[small])).max() < 3e-7   # the series keeps relative accuracy
    assert polynomial_erf(jnp.float32(0.0)) == 0.0


def test_portable_function_has_no_chlo_ops_and_the_same_outputs():
    @jax.jit                                           # a jit body and a custom_jvp rule are inlined
    def block(x):
        return jax.nn.gelu(x, approximate=False) + jax.nn.relu(jnp.square(x)) + lax.erfc(x)

    def fn(x):
        values, idx = lax.top_k(block(x), 5)
        return values, idx, jax.nn.softplus(x)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 16)), jnp.float32)
    text = jax.jit(fn).lower(x).as_text()
    assert all(op in text for op in ("chlo.top_k", "chlo.erf", "chlo.square"))
    assert "chlo." not in jax.jit(portable(fn)).lower(x).as_text()
    for out, ref in zip(portable(fn)(x), fn(x)):
        assert out.dtype == ref.dtype and out.shape == ref.shape
        np.testing.assert_allclose(out, ref, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_every_registered_image_model_lowers_without_chlo_ops(name):
    exportable = exporter.from_registry(name, 32, 32)
    assert savedmodel.chlo_ops(portable(exportable.fn), jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)) == []


@needs_tf
def test_cli_savedmodel_with_dynamic_batch_loads_in_tensorflow(tmp_path):
    import tensorflow as tf
    out = tmp_path / "mbv2_savedmodel"
    proc = run_cli(["export", "--model", "mobilenet_v2_050", "--input", "32x40", "--format", "savedmodel",
                    "--dynamic-batch", "--out", str(out), "--verify"])
    assert proc.stdout.count("| probabilities |") == 2 and "| NO |" not in proc.stdout   # batches 1 and 3
    meta = json.loads((out / "assets.extra" / "jaxvision.json").read_text())
    assert meta["format"] == "savedmodel" and meta["signature"] == "serving_default"
    assert meta["input"]["layout"] == "NHWC" and meta["input"]["shape"] == ["batch", 32, 40, 3]
    assert meta["outputs"]["logits"]["shape"] == ["batch", 1000] and meta["task"] == "classification"

    serve = tf.saved_model.load(str(out)).signatures["serving_default"]
    exportable = exporter.from_registry("mobilenet_v2_050", 32, 40)
    pixels = np.random.default_rng(5).uniform(0, 255, (2, 32, 40, 3)).astype(np.float32)
    result = serve(image=tf.constant(pixels))
    assert set(result) == {"logits", "probabilities"}
    reference = jax.jit(exportable.fn)(pixels)
    error = float(np.abs(result["logits"].numpy() - reference[0]).max())
    assert error < 1e-4
    assert float(np.abs(reference[0][0] - reference[0][1]).max()) > 10 * error   # the outputs depend on the input


@needs_tf
def test_adas_decoding_inside_the_savedmodel_matches_jax(tmp_path):
    exportable = exporter.from_registry("cerberus_mbv2_bifpn", 64, 128)
    lines = []
    paths = exporter.export(exportable, str(tmp_path / "cerberus"), fmt="savedmodel", layout="nchw", verify=True,
                            log=lines.append)
    assert paths == [str(tmp_path / "cerberus"), str(tmp_path / "cerberus" / "assets.extra" / "jaxvision.json")]
    assert "| lane_instances |" in lines[0] and "| NO |" not in lines[0]
    meta = json.loads(open(paths[1]).read())
    assert meta["input"]["shape"] == [1, 3, 64, 128] and meta["outputs"]["boxes"]["shape"] == [1, 100, 4]
    diffs = savedmodel.verify(exportable, paths[0], "nchw", seed=3)     # other pixels than the export's check
    assert all(d.ok for d in diffs), exporter.format_differences(diffs)


@needs_tf
def test_savedmodel_errors_leave_nothing_behind(tmp_path, monkeypatch):
    exportable = exporter.from_registry("mobilenet_v2_050", 32, 32)
    with pytest.raises(ExportError, match="precision 'fp16'"):
        exporter.export(exportable, str(tmp_path / "a"), fmt="savedmodel", precision="fp16")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="a file of that name exists"):
        exporter.export(exportable, str(tmp_path / "file"), fmt="savedmodel")
    with pytest.raises(ExportError, match="not a writable folder"):
        exporter.export(exportable, str(tmp_path / "file" / "a"), fmt="savedmodel")

    cosh = exporter.Exportable("cosh_model", lambda x: (jnp.cosh(x / 255.0),), 8, 8, ("y",), {"outputs": {"y": "-"}})
    with pytest.raises(ExportError, match=r"cosh_model lowers to CHLO op\(s\) cosh.*nothing was written"):
        exporter.export(cosh, str(tmp_path / "b"), fmt="savedmodel")

    monkeypatch.setitem(exporter.TOLERANCE, "fp32", 0.0)
    with pytest.raises(ExportError, match="above tolerance"):
        exporter.export(exportable, str(tmp_path / "c"), fmt="savedmodel", verify=True, log=lambda _: None)
    assert os.listdir(tmp_path) == ["file"]

    monkeypatch.setitem(sys.modules, "tensorflow", None)        # TensorFlow not installed
    with pytest.raises(ExportError, match="install the tf extra"):
        exporter.export(exportable, str(tmp_path / "d"), fmt="savedmodel")


@needs_tf
def test_export_replaces_an_earlier_savedmodel(tmp_path):
    import tensorflow as tf
    out = tmp_path / "model"
    exporter.export(exporter.from_registry("mobilenet_v2_050", 32, 32), str(out), fmt="savedmodel")
    (out / "stale.txt").write_text("from the earlier export")
    exporter.export(exporter.from_registry("dms_tiny", 32, 32), str(out), fmt="savedmodel")
    assert not (out / "stale.txt").exists() and sorted(os.listdir(tmp_path)) == ["model"]
    assert oct(os.stat(out).st_mode & 0o777) == "0o755"
    outputs = tf.saved_model.load(str(out)).signatures["serving_default"].structured_outputs
    assert set(outputs) == {"landmarks", "eyes", "mouth", "head_pose", "distraction"}
