"""`jaxvision export --format savedmodel`: the inference function as a TensorFlow SavedModel (jax2tf).

jax2tf stores the function's StableHLO, weights included as constants, in one XlaCallModule op lowered for
CPU and CUDA, behind the signature `serving_default`: input `image`, outputs named as in the ONNX export.
The sidecar JSON goes into the SavedModel's `assets.extra/jaxvision.json`, so it travels with the folder.
The folder is built beside `out` and renamed into place: nothing half-written is left behind.

TensorFlow is the optional `tf` extra (tensorflow-cpu 2.21), imported only here. It reads StableHLO 1.13,
while JAX 0.10 writes CHLO ops (top_k, erf, ...) as `composite` ops that version cannot read: the function is
traced through `portable` (core-op top_k and erf), and a graph that still holds a CHLO op is refused before
anything is written, naming the op.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import tempfile

import jax
import jax.numpy as jnp

from jaxvision.export import exporter
from jaxvision.export.onnx_graph import ExportError
from jaxvision.export.portable import portable
from jaxvision.layers.depthwise import grouped_conv

SIGNATURE = "serving_default"
SIDECAR = os.path.join("assets.extra", "jaxvision.json")
PLATFORMS = ("cpu", "cuda")


def tensorflow_missing() -> str | None:
    """None when TensorFlow is installed, else the reason.

    Looks the package up without importing it: a process that loads TensorFlow before triton (which
    torchvision imports) segfaults, so asking must not load it."""
    if importlib.util.find_spec("tensorflow") is None:
        return "TensorFlow is not installed; install the tf extra: pip install -e '.[tf]'"
    return None


def chlo_ops(fn, spec: jax.ShapeDtypeStruct) -> list[str]:
    """The CHLO operations in the StableHLO of `fn` (those TensorFlow 2.21 cannot deserialise)."""
    with grouped_conv():
        text = jax.jit(fn).lower(spec).as_text()
    return sorted(set(re.findall(r"\bchlo\.([a-z_]+)", text)))


def _module(exportable: exporter.Exportable, batch: int, dynamic_batch: bool, layout: str):
    """A tf.Module whose `serve` maps `image` to the dict of named outputs."""
    import tensorflow as tf
    from jax.experimental import jax2tf
    shape = list(exporter.input_shape(exportable, batch, layout))
    if dynamic_batch:
        shape[0] = None
    converted = jax2tf.convert(portable(exporter.with_layout(exportable, layout)), with_gradient=False,
                               polymorphic_shapes=["(batch, ...)"] if dynamic_batch else None,
                               native_serialization_platforms=PLATFORMS)
    module = tf.Module()
    module.serve = tf.function(lambda image: dict(zip(exportable.output_names, converted(image))), autograph=False,
                               input_signature=[tf.TensorSpec(shape, tf.float32, name="image")])
    return module


def _dims(exportable: exporter.Exportable, batch: int, dynamic_batch: bool, layout: str):
    """(input dims, {output: dims}) with 'batch' for the batch dimension of a dynamic-batch graph."""
    shape = exporter.input_shape(exportable, batch, layout)
    outs = jax.eval_shape(exporter.with_layout(exportable, layout), jax.ShapeDtypeStruct(shape, jnp.float32))

    def named(dims):
        return ["batch" if dynamic_batch and i == 0 else int(d) for i, d in enumerate(dims)]
    return named(shape), {name: named(o.shape) for name, o in zip(exportable.output_names, outs)}


def verify(exportable: exporter.Exportable, path: str, layout: str, batches=(1,),
           seed: int = 0) -> list[exporter.Difference]:
    """Runs the SavedModel at `path` (TensorFlow, CPU) and the JAX function on the same random pixels."""
    import tensorflow as tf
    serve = tf.saved_model.load(path).signatures[SIGNATURE]

    def run(pixels):
        outputs = serve(image=tf.constant(pixels))
        return [outputs[name].numpy() for name in exportable.output_names]
    return exporter.compare_on_random_pixels(exportable, run, layout, "fp32", batches, seed)


def save(exportable: exporter.Exportable, out: str, batch: int = 1, dynamic_batch: bool = False,
         layout: str = "nhwc", precision: str = "fp32", verify_outputs: bool = False, log=print) -> list[str]:
    """Writes the SavedModel folder `out` (with its sidecar inside); with `verify_outputs`, checks TensorFlow
    against JAX first and raises above tolerance. Returns [out, sidecar path]."""
    reason = tensorflow_missing()
    if reason:
        raise ExportError(f"cannot write a SavedModel: {reason}")
    if precision != "fp32":
        raise ExportError(f"SavedModel precision '{precision}' is not supported (fp32 only)")
    if layout not in exporter.LAYOUTS:
        raise ExportError(f"layout '{layout}' is unknown; choose one of {', '.join(exporter.LAYOUTS)}")
    if os.path.exists(out) and not os.path.isdir(out):
        raise ExportError(f"cannot write the SavedModel folder {out}: a file of that name exists")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise ExportError(f"cannot write {out}: {parent} is not a writable folder")
    spec = jax.ShapeDtypeStruct(exporter.input_shape(exportable, batch, layout), jnp.float32)
    unreadable = chlo_ops(portable(exporter.with_layout(exportable, layout)), spec)
    if unreadable:
        raise ExportError(f"{exportable.name} lowers to CHLO op(s) {', '.join(unreadable)}, which TensorFlow's "
                          "XlaCallModule (StableHLO 1.13, TF 2.21) cannot read; nothing was written")
    import tensorflow as tf
    input_dims, output_dims = _dims(exportable, batch, dynamic_batch, layout)
    meta = exporter.sidecar(exportable, "savedmodel", input_dims, output_dims, layout, precision, dynamic_batch,
                            signature=SIGNATURE, tensorflow=tf.__version__)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(out))}.", dir=parent)
    try:
        with grouped_conv():  # one grouped convolution per depthwise conv, as in the ONNX graph
            module = _module(exportable, batch, dynamic_batch, layout)
            tf.saved_model.save(module, staging, signatures={SIGNATURE: module.serve})
        os.makedirs(os.path.join(staging, os.path.dirname(SIDECAR)), exist_ok=True)
        with open(os.path.join(staging, SIDECAR), "w") as f:
            f.write(json.dumps(meta, indent=2) + "\n")
        if verify_outputs:
            diffs = verify(exportable, staging, layout, batches=(1, 3) if dynamic_batch else (batch,))
            log(exporter.format_differences(diffs))
            bad = sorted({d.output for d in diffs if not d.ok})
            if bad:
                raise ExportError(f"TensorFlow differs from JAX above tolerance on {', '.join(bad)}; nothing was "
                                  "written")
        _replace_folder(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [out, os.path.join(out, SIDECAR)]


def _replace_folder(staging: str, out: str) -> None:
    """Moves the finished folder `staging` to `out`, replacing an earlier export there."""
    os.chmod(staging, 0o755)  # mkdtemp's 0700 would hide the model from other users
    if not os.path.isdir(out):
        os.replace(staging, out)
        return
    old = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(out))}.old.",
                           dir=os.path.dirname(os.path.abspath(out)))
    os.replace(out, os.path.join(old, "model"))
    os.replace(staging, out)
    shutil.rmtree(old)
