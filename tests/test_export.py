"""Export: JAX -> ONNX graph conversion, parity with ONNX Runtime, the CLI, the sidecar, the runtime, bad input."""

import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from flax import linen as nn

from jaxvision import models
from jaxvision.export import exporter
from jaxvision.export.onnx_graph import ExportError, check, to_onnx
from jaxvision.export.runtime import Runtime
from conftest import IMAGE_MODELS, ROOT, run_cli

def _ort(model: onnx.ModelProto):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _assert_ok(diffs):
    assert diffs and all(d.ok for d in diffs), exporter.format_differences(diffs)


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_every_registered_image_model_matches_onnx_runtime(name):
    exportable = exporter.from_registry(name, 32, 32)
    model = exporter.build_onnx(exportable, batch=2, layout="nhwc")
    pixels = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    reference = jax.device_get(jax.jit(exportable.fn)(pixels))
    diffs = exporter.compare(reference, _ort(model).run(None, {"image": pixels}), exportable.output_names, "fp32")
    _assert_ok(diffs)
    # randomised weights make the outputs depend on the input (10x more than the two runtimes differ),
    # so the comparison is not trivially met
    assert float(np.abs(reference[0][0] - reference[0][1]).max()) > 10 * diffs[0].max_abs


@pytest.mark.parametrize("attention", ["vanilla", "dct-0.25"])
def test_bert_encoder_with_token_inputs_matches_onnx_runtime(attention):
    encoder = models.bert.BertEncoder(vocab_size=50, max_len=24, width=32, depth=2, num_heads=4, mlp_dim=64,
                                      attention=attention)
    tokens = np.random.default_rng(0).integers(1, 50, (2, 24)).astype(np.int32)
    variables = encoder.init(jax.random.PRNGKey(0), tokens, False)
    fn = lambda t: encoder.apply(variables, t, False)  # noqa: E731
    model = check(to_onnx(fn, [jax.ShapeDtypeStruct((2, 24), jnp.int32)], ["tokens"], ["hidden"]))
    out = _ort(model).run(None, {"tokens": tokens})[0]
    np.testing.assert_allclose(out, np.asarray(fn(tokens)), atol=1e-4)
    assert any(n.op_type == "Gather" for n in model.graph.node)  # the embedding lookup


@pytest.mark.parametrize("opset,layout", [(13, "nchw"), (17, "nhwc"), (17, "nchw"), (20, "nchw")])
def test_opsets_and_layouts(opset, layout):
    exportable = exporter.from_registry("deeplabv3plus", 32, 64, encoder="resnet18", aspp_channels=32,
                                        decoder_channels=32, skip_channels=8)
    model = exporter.build_onnx(exportable, opset=opset, layout=layout)
    assert model.opset_import[0].version == opset
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert shape == ([1, 3, 32, 64] if layout == "nchw" else [1, 32, 64, 3])
    logits = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert logits == ([1, 19, 32, 64] if layout == "nchw" else [1, 32, 64, 19])
    _assert_ok(exporter.verify_onnx(exportable, model.SerializeToString(), layout, "fp32"))


def test_batchnorm_is_folded_into_the_convolutions():
    exportable = exporter.from_registry("resnet18", 32, 32)
    ops = [n.op_type for n in exporter.build_onnx(exportable).graph.node]
    # no (x - mean) * scale + shift left: the one Sub is the softmax's x - max of the probabilities output
    assert ops.count("Conv") == 20 and ops.count("Sub") == 1 and "Mul" not in ops and "Sqrt" not in ops


def test_dynamic_batch_runs_batch_1_and_3_through_one_graph():
    exportable = exporter.from_registry("mobilenet_v2", 32, 32)
    model = exporter.build_onnx(exportable, dynamic_batch=True)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    _assert_ok(exporter.verify_onnx(exportable, model.SerializeToString(), "nchw", "fp32", batches=(1, 3)))


def test_fp16_graph_within_tolerance_and_half_the_size():
    exportable = exporter.from_registry("resnet18", 32, 32)
    fp32, fp16 = (exporter.build_onnx(exportable, precision=p) for p in ("fp32", "fp16"))
    assert fp16.graph.initializer[0].data_type == onnx.TensorProto.FLOAT16
    assert fp16.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # float32 in and out
    assert 0.45 < fp16.ByteSize() / fp32.ByteSize() < 0.55
    diffs = exporter.verify_onnx(exportable, fp16.SerializeToString(), "nchw", "fp16")
    _assert_ok(diffs)
    assert max(d.max_abs for d in diffs if d.output == "logits") > 1e-6  # really computed in half precision


def test_every_jaxpr_op_family_against_jax():
    # slices, pads (positive and negative), concatenation, reductions, argmax, pooling, select, cumsum, clamp
    def fn(x):
        y = jax.lax.pad(x[:, 1:, ::2], 0.0, ((0, 0, 0), (2, -1, 0), (1, 1, 0), (0, 0, 0)))
        z = jnp.concatenate([y, -y], axis=-1)
        pooled = nn.avg_pool(z, (2, 2), strides=(1, 1), padding="SAME") + nn.max_pool(z, (3, 3), padding="SAME")
        picked = jnp.where(pooled > 0, jnp.sqrt(jnp.abs(pooled)), jnp.exp(pooled))
        return (jnp.clip(picked, 0.1, 2.0).sum(axis=(1, 2)), jnp.argmax(picked, axis=-1),
                jnp.cumsum(picked, axis=1), jnp.max(picked, axis=(1, 3)), picked[:, ::-1].mean(axis=-1))

    x = np.random.default_rng(0).normal(size=(2, 9, 10, 3)).astype(np.float32)
    model = check(to_onnx(fn, [jax.ShapeDtypeStruct(x.shape, jnp.float32)], ["x"], [f"o{i}" for i in range(5)]))
    for got, want in zip(_ort(model).run(None, {"x": x}), fn(x)):
        np.testing.assert_allclose(got, np.asarray(want), rtol=1e-5, atol=1e-5)


def test_unsupported_primitive_names_it_and_the_layer():
    class Sorter(nn.Module):
        @nn.compact
        def __call__(self, x):
            return jnp.sort(nn.Dense(4, name="proj")(x), axis=-1)

    module = Sorter()
    variables = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 4)))
    with pytest.raises(ExportError, match=r"primitive 'sort' in layer 'Sorter'.*test_export.py"):
        to_onnx(lambda x: module.apply(variables, x), [jax.ShapeDtypeStruct((1, 4), jnp.float32)], ["x"], ["y"])


def test_bad_settings_are_refused():
    exportable = exporter.from_registry("resnet18", 32, 32)
    with pytest.raises(ExportError, match="opset 12"):
        exporter.build_onnx(exportable, opset=12)
    with pytest.raises(ExportError, match="int8"):
        exporter.build_onnx(exportable, precision="int8")
    with pytest.raises(ExportError, match="format 'tflite'"):
        exporter.export(exportable, "/tmp/never.onnx", fmt="tflite")


def test_failed_verification_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setitem(exporter.TOLERANCE, "fp32", 0.0)
    out = tmp_path / "model.onnx"
    with pytest.raises(ExportError, match="above tolerance"):
        exporter.export(exporter.from_registry("mobilenet_v2_050", 32, 32), str(out), verify=True, log=lambda _: None)
    assert os.listdir(tmp_path) == []


def test_unwritable_output_leaves_nothing(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    with pytest.raises(ExportError, match="cannot write"):
        exporter.export(exporter.from_registry("mobilenet_v2_050", 32, 32), str(blocker / "model.onnx"))
    assert sorted(os.listdir(tmp_path)) == ["not_a_folder"]


def test_tensorrt_without_tensorrt_writes_the_onnx_and_says_how_to_build(tmp_path):
    if exporter.tensorrt_available() is None:
        pytest.skip("TensorRT and a GPU are present: the engine test below runs instead")
    with pytest.raises(ExportError, match=r"trtexec --onnx=.*model\.onnx --saveEngine=.*model\.engine --fp16"):
        exporter.export(exporter.from_registry("mobilenet_v2_050", 32, 32), str(tmp_path / "model.engine"),
                        fmt="tensorrt", precision="fp16")
    assert sorted(os.listdir(tmp_path)) == ["model.json", "model.onnx"]


@pytest.mark.skipif(exporter.tensorrt_available() is not None,
                    reason=f"TensorRT engine build: {exporter.tensorrt_available()}")
def test_tensorrt_engine_builds(tmp_path):
    paths = exporter.export(exporter.from_registry("mobilenet_v2_050", 32, 32), str(tmp_path / "m.engine"),
                            fmt="tensorrt", precision="fp16")
    assert os.path.getsize(paths[-1]) > 0


# ------------------------------------------------------------------------ from a training run, through the CLI
def test_export_a_trained_run_and_run_it_without_jax(one_device_run, tmp_path):
    workdir, _ = one_device_run
    out = tmp_path / "deploy" / "segdepth.onnx"
    proc = run_cli(["export", "--workdir", workdir, "--out", str(out), "--dynamic-batch", "--verify"])
    assert "semseg_logits" in proc.stdout and "| NO |" not in proc.stdout
    meta = json.loads((tmp_path / "deploy" / "segdepth.json").read_text())
    assert meta["checkpoint"]["step"] == 4 and meta["input"]["shape"] == ["batch", 3, 32, 64]
    assert meta["class_names"][0] == "road" and len(meta["palette"]) == 19
    assert set(meta["outputs"]) == {"semseg_logits", "semseg_labels", "depth"}

    # the standalone runtime agrees with the raw graph and never imports JAX
    image = np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    np.save(tmp_path / "image.npy", image)
    script = (f"import sys, numpy as np; from jaxvision.export.runtime import Runtime; "
              f"r = Runtime({str(out)!r}).predict(np.load({str(tmp_path / 'image.npy')!r})); "
              f"np.savez({str(tmp_path / 'r.npz')!r}, **r); print('jax' in sys.modules)")
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True)
    assert ran.stdout.strip() == "False"
    result = np.load(tmp_path / "r.npz")
    runtime = Runtime(str(out))
    raw = runtime.run(runtime.preprocess([image]))
    np.testing.assert_array_equal(result["labels"], raw["semseg_labels"][0])
    np.testing.assert_array_equal(result["color"], np.asarray(meta["palette"], np.uint8)[raw["semseg_labels"][0]])
    assert result["depth"].shape == (32, 64) and np.all(result["depth"] > 0)


def test_export_cli_errors(one_device_run, tmp_path):
    workdir, _ = one_device_run
    empty = tmp_path / "empty"
    shutil.copytree(workdir, empty, ignore=shutil.ignore_patterns("checkpoints"))
    proc = run_cli(["export", "--workdir", str(empty), "--out", str(tmp_path / "a.onnx")], check=False)
    assert proc.returncode == 1 and "no checkpoint" in proc.stderr and "Traceback" not in proc.stderr

    proc = run_cli(["export", "--workdir", workdir, "--step", "3", "--out", str(tmp_path / "a.onnx")], check=False)
    assert proc.returncode == 1 and "step 3" in proc.stderr and "[2, 4]" in proc.stderr

    other = tmp_path / "other"
    shutil.copytree(workdir, other)
    config = json.loads((other / "config.json").read_text())
    config["model"]["encoder"] = "resnet34"
    (other / "config.json").write_text(json.dumps(config))
    proc = run_cli(["export", "--workdir", str(other), "--out", str(tmp_path / "a.onnx")], check=False)
    assert proc.returncode == 1 and "does not fit the model" in proc.stderr
    assert not os.path.exists(tmp_path / "a.onnx")


def test_export_input_size_and_task_errors(one_device_run, tmp_path):
    proc = run_cli(["export", "--model", "resnet18", "--input", "64", "--out", str(tmp_path / "a.onnx")], check=False)
    assert proc.returncode == 1 and "--input '64' is not HxW" in proc.stderr
    text = tmp_path / "text_run"
    shutil.copytree(one_device_run[0], text)
    config = json.loads((text / "config.json").read_text())
    config["task"] = "mlm"
    (text / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="needs a run of task segdepth, dms or adas; .* is task .mlm."):
        exporter.from_workdir(str(text))
    assert os.listdir(tmp_path) == ["text_run"]


def test_runtime_needs_the_model_and_its_sidecar(tmp_path):
    with pytest.raises(FileNotFoundError, match="no exported model"):
        Runtime(str(tmp_path / "missing.onnx"))
    (tmp_path / "lonely.onnx").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"no sidecar .*lonely\.json"):
        Runtime(str(tmp_path / "lonely.onnx"))


@pytest.mark.parametrize("stride,padding", [(2, "SAME"), (2, "VALID"), (3, ((1, 2), (0, 1)))])
def test_transposed_convolution_matches_onnx_runtime(stride, padding):
    """lax's transposed conv (an input-dilated conv) exports as zero insertion (a depthwise ConvTranspose of ones)
    followed by the Conv, e.g. the simple neck's 4x4 stride-2 upsampling of CERBERUS."""
    layer = nn.ConvTranspose(5, (4, 4), strides=(stride, stride), padding=padding)
    x = np.random.default_rng(0).normal(size=(2, 6, 7, 3)).astype(np.float32)
    params = layer.init(jax.random.PRNGKey(0), x)
    fn = lambda v: layer.apply(params, v)  # noqa: E731
    model = check(to_onnx(fn, [jax.ShapeDtypeStruct(x.shape, jnp.float32)], ["x"], ["y"], dynamic_batch=True))
    got = _ort(model).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, np.asarray(fn(x)), atol=1e-5)
