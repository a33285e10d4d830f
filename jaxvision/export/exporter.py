"""`jaxvision export`: a training run's checkpoint (or a registered model) -> ONNX / TensorRT + sidecar JSON
(TensorFlow SavedModel: `jaxvision.export.savedmodel`).

The exported graph is the inference function: eval mode, BatchNorm folded into the convolutions,
the input's normalisation inside the graph (float32 RGB pixels 0..255 in, divided by 255 as in the
data pipeline), and outputs named per task. A sidecar `<out>.json` says what goes in and what comes
out, for `jaxvision.export.runtime` on the device.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxvision import models
from jaxvision.export.onnx_graph import DEFAULT_OPSET, ExportError, check, to_onnx
from jaxvision.fileio import write_atomic
from jaxvision.layers.depthwise import grouped_conv

PIXEL_SCALE = 255.0
TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}            # max |onnx - jax| / max(1, max |jax|), float outputs
LABEL_MISMATCH = {"fp32": 1e-3, "fp16": 2e-2}       # fraction of differing argmax labels allowed
IMAGE_TASKS = ("segdepth", "dms", "adas")
LAYOUTS, PRECISIONS, FORMATS = ("nchw", "nhwc"), ("fp32", "fp16"), ("onnx", "tensorrt", "savedmodel")


@dataclasses.dataclass
class Exportable:
    """What gets exported: `fn(pixels NHWC float32 0..255) -> tuple of outputs` and its description."""

    name: str
    fn: Callable
    height: int
    width: int
    output_names: tuple[str, ...]
    meta: dict            # sidecar fields: task, outputs' meanings, class names, palette, checkpoint
    parameters: int = 0   # the model's trainable parameters


def _segdepth_outputs(model, variables) -> tuple[Callable, tuple[str, ...], dict]:
    def fn(pixels):
        out = model.apply(variables, pixels / PIXEL_SCALE, train=False)
        logits = out["semseg"]
        return logits, jnp.argmax(logits, axis=-1).astype(jnp.int32), out["depth"]
    names = ("semseg_logits", "semseg_labels", "depth")
    meanings = {"semseg_logits": "per-pixel class logits [B, H, W, classes] (NCHW layout: [B, classes, H, W])",
                "semseg_labels": "per-pixel class index [B, H, W] (argmax of the logits)",
                "depth": "per-pixel depth in metres [B, H, W]"}
    return fn, names, meanings


def _classifier_outputs(model, variables) -> tuple[Callable, tuple[str, ...], dict]:
    def fn(pixels):
        logits = model.apply(variables, pixels / PIXEL_SCALE, train=False)
        return logits, jax.nn.softmax(logits, axis=-1)
    return fn, ("logits", "probabilities"), {"logits": "class logits [B, classes]",
                                             "probabilities": "softmax of the logits [B, classes]"}


def _dms_outputs(model, variables) -> tuple[Callable, tuple[str, ...], dict]:
    from jaxvision.models.dms import decode
    names = ("landmarks", "eyes", "mouth", "head_pose", "distraction")

    def fn(pixels):
        out = decode(model.apply(variables, pixels / PIXEL_SCALE, train=False))
        return tuple(out[name] for name in names)
    meanings = {"landmarks": "98 WFLW landmarks (x, y) in [0, 1] of the input crop [B, 98, 2]",
                "eyes": "probabilities [B, 4]: left eye visible, left eye open, right eye visible, right eye open "
                        "(left = image left)",
                "mouth": "probabilities [B, 3] of the mouth opening levels",
                "head_pose": "yaw, pitch, roll in radians [B, 3]",
                "distraction": "probabilities [B, 3] of the distraction classes"}
    return fn, names, meanings


def _dms_meta() -> dict:
    from jaxvision.data.face_landmarks import DISTRACTION_CLASSES, EYE_LABELS, MOUTH_LEVELS
    return {"eye_labels": list(EYE_LABELS), "mouth_levels": list(MOUTH_LEVELS),
            "distraction_classes": list(DISTRACTION_CLASSES)}


# The ADAS graph ends with the jit decoding of jaxvision/adas_decode.py; lanes are fitted on the host (runtime).
ADAS_DECODING = dict(top_k=100, lane_top_k=512, lane_threshold=0.5, lane_cluster_distance=12.0)


def _adas_network_outputs(model, variables) -> tuple[Callable, tuple[str, ...], dict]:
    """The network alone (no decoding): its dense maps and tag probabilities."""
    tags = tuple(task for task, _ in model.tags)
    names = ("heatmap", "box_offsets", "occlusion", "lane_heatmap", "lane_offsets") + tags

    def fn(pixels):
        out = model.apply(variables, pixels / PIXEL_SCALE, train=False)
        return tuple(jax.nn.softmax(out[n], axis=-1) if n in tags else out[n] for n in names)
    meanings = {"heatmap": "object-centre probabilities [B, H/4, W/4, classes]",
                "box_offsets": "corner offsets (Eq. 3.2) in output cells [B, H/4, W/4, 4]",
                "occlusion": "occlusion logits [B, H/4, W/4, 1]",
                "lane_heatmap": "lane keypoint probabilities [B, H/4, W/4, lane classes]",
                "lane_offsets": "votes for the lane midpoint in output cells [B, H/4, W/4, 2]",
                **{tag: f"probabilities [B, classes] of the {tag} tag" for tag in tags}}
    return fn, names, meanings


def _adas_outputs(model, variables, decoding: dict) -> tuple[Callable, tuple[str, ...], dict]:
    from jaxvision import adas_decode
    from jaxvision.models.adas import OUTPUT_STRIDE
    tags = tuple(task for task, _ in model.tags)
    names = ("boxes", "scores", "classes", "occluded", "lane_points", "lane_scores", "lane_classes",
             "lane_instances") + tags

    def fn(pixels):
        out = model.apply(variables, pixels / PIXEL_SCALE, train=False)
        decoded = adas_decode.decode_outputs(out, OUTPUT_STRIDE, **decoding)
        dets, lanes = decoded["detections"], decoded["lanes"]
        return (dets["boxes"], dets["scores"], dets["classes"].astype(jnp.int32), dets["occluded"],
                lanes["points"], jnp.where(lanes["valid"], lanes["scores"], 0.0), lanes["classes"].astype(jnp.int32),
                lanes["labels"], *(jax.nn.softmax(out[tag], axis=-1) for tag in tags))
    k, n = decoding["top_k"], decoding["lane_top_k"]
    meanings = {"boxes": f"object boxes (x1, y1, x2, y2) in input pixels, best peaks first [B, {k}, 4]",
                "scores": f"centre-heatmap peak scores [B, {k}] (keep those >= the sidecar's score_threshold)",
                "classes": f"object class index [B, {k}]",
                "occluded": f"occlusion probability [B, {k}]",
                "lane_points": f"lane keypoints (x, y) in input pixels [B, {n}, 2]",
                "lane_scores": f"keypoint heat [B, {n}], 0 for no keypoint",
                "lane_classes": f"lane class index [B, {n}]",
                "lane_instances": f"lane instance of each keypoint [B, {n}] (-1: none); fit one curve per instance",
                **{tag: f"probabilities [B, classes] of the {tag} tag" for tag in tags}}
    return fn, names, meanings


def _task_outputs(task: str, model, variables, decoding: dict | None = None,
                  decode: bool = True) -> tuple[Callable, tuple[str, ...], dict]:
    """(inference fn, output names, meta) of an image task's model; `decode=False`: an ADAS network's raw maps."""
    if task == "adas" and not decode:
        fn, names, meanings = _adas_network_outputs(model, variables)
        return fn, names, {"task": "adas_network", "outputs": meanings}
    if task == "adas":
        decoding = {**ADAS_DECODING, **(decoding or {})}
        fn, names, meanings = _adas_outputs(model, variables, decoding)
        return fn, names, {"task": "adas", "outputs": meanings, "decoding": decoding, "score_threshold": 0.25,
                           "class_names": [str(i) for i in range(model.num_classes)],
                           "tag_names": {tag: [str(i) for i in range(n)] for tag, n in model.tags}}
    if task == "dms":
        fn, names, meanings = _dms_outputs(model, variables)
        return fn, names, {"task": "dms", "outputs": meanings, **_dms_meta()}
    if task == "segdepth":
        fn, names, meanings = _segdepth_outputs(model, variables)
        return fn, names, {"task": "segdepth", "outputs": meanings}
    fn, names, meanings = _classifier_outputs(model, variables)
    return fn, names, {"task": "classification", "outputs": meanings}


def from_workdir(workdir: str, step: int | None = None, decode: bool = True) -> Exportable:
    """The inference function of the run in `workdir` at `step` (default: latest checkpoint); `decode=False`
    leaves an ADAS model's decoding out."""
    from jaxvision import visualize
    from jaxvision.train.loop import load_run

    config, model, state, step = load_run(workdir, step, tasks=IMAGE_TASKS)
    variables = jax.device_get(state.variables())
    decoding = {key: config.eval[key] for key in ADAS_DECODING} if config.task == "adas" else None
    fn, names, meta = _task_outputs(config.task, model, variables, decoding, decode)
    if meta["task"] == "adas":
        meta.update(class_names=list(config.data.adas.class_names), score_threshold=config.eval.score_threshold,
                    tag_names={tag: list(names) for tag, names in zip(config.data.adas.tags,
                                                                      config.data.adas.tag_names)})
    if config.task == "segdepth":
        classes = config.data.num_classes
        meta.update(num_classes=classes, class_names=list(visualize.CITYSCAPES_CLASSES)
                    if classes == len(visualize.CITYSCAPES_CLASSES) else [str(i) for i in range(classes)],
                    palette=visualize.CITYSCAPES_PALETTE.tolist() if classes == len(visualize.CITYSCAPES_PALETTE)
                    else None)
    meta["checkpoint"] = {"workdir": os.path.abspath(workdir), "step": int(step)}
    return Exportable(config.model.name, fn, config.data.height, config.data.width, names, meta,
                      models.count_params(variables["params"]))


def from_registry(name: str, height: int, width: int, seed: int = 0, decode: bool = True, **options) -> Exportable:
    """A registered model with freshly initialised weights, for parity tests and latency measurements without a
    checkpoint. Zero-initialised arrays (heads, biases) are randomised and BatchNorm statistics calibrated on
    random images, so that every weight and the BatchNorm folding show in the outputs."""
    from jaxvision.models.adas import Cerberus
    from jaxvision.models.dms import DMSNet
    model = models.create(name, **options)
    init = jax.jit(lambda key, x: model.init(key, x, train=False))  # inputs as arguments: nothing to fold
    variables = init(jax.random.PRNGKey(seed), jnp.zeros((1, height, width, 3)))
    rng = np.random.default_rng(seed)

    def randomise(path, a):  # zero-initialised scales (zero-init residual BN) near 1, other zeros small
        if not a.ndim or np.any(a):
            return a
        scale = "scale" in jax.tree_util.keystr(path)
        return np.asarray(rng.uniform(0.5, 1.5, a.shape) if scale else rng.normal(0, 0.02, a.shape), a.dtype)
    variables = {**variables, "params": jax.tree_util.tree_map_with_path(randomise, variables["params"])}
    if "batch_stats" in variables:
        variables = _calibrate_batch_stats(name, options, variables, rng.uniform(0, 1, (4, height, width, 3)))
    probe = jax.eval_shape(lambda x: model.apply(variables, x, train=False), jnp.zeros((1, height, width, 3)))
    task = ("dms" if isinstance(model, DMSNet) else "adas" if isinstance(model, Cerberus)
            else "segdepth" if isinstance(probe, dict) else "classification")
    fn, names, meta = _task_outputs(task, model, variables, decode=decode)
    meta["checkpoint"] = None
    return Exportable(name, fn, height, width, names, meta, models.count_params(variables["params"]))


def _calibrate_batch_stats(name: str, options: dict, variables: dict, images: np.ndarray) -> dict:
    """`variables` with running BatchNorm statistics fitted to `images`, so that a fresh deep network's
    eval-mode signal neither fades nor explodes. A train-mode pass (dropout and drop-path off) from zero
    statistics gives (1 - momentum) * stat, one from ones gives momentum + (1 - momentum) * stat; solving
    gives each layer's batch mean m and variance v. The running mean is set to m / 10 and the variance to
    v + m^2 (the second moment): activations keep about unit scale, the mean subtraction is exercised, and
    no layer subtracts a large mean from a nearly equal activation (which would magnify float rounding)."""
    quiet = {k: 0.0 for k in models.model_options(name) if "drop" in k and k not in options}
    model = models.create(name, **options, **quiet)

    @jax.jit  # weights and images are arguments, not constants XLA would try to fold
    def updated(params, stats, x):
        return model.apply({"params": params, "batch_stats": stats}, x, train=True,
                           mutable=["batch_stats"])[1]["batch_stats"]
    stats, x = variables["batch_stats"], jnp.asarray(images, jnp.float32)
    from_zeros = updated(variables["params"], jax.tree.map(jnp.zeros_like, stats), x)
    from_ones = updated(variables["params"], jax.tree.map(jnp.ones_like, stats), x)
    solved = jax.tree.map(lambda z, o: z / (1.0 - (o - z)), from_zeros, from_ones)
    flat = dict(jax.tree_util.tree_flatten_with_path(solved)[0])

    def fitted(path, stat):
        key = jax.tree_util.keystr(path)
        if key.endswith("['mean']"):
            return 0.1 * stat
        mean = flat[path[:-1] + (jax.tree_util.DictKey("mean"),)]
        return jnp.maximum(stat + jnp.square(mean), 1e-2)
    return {**variables, "batch_stats": jax.device_get(jax.tree_util.tree_map_with_path(fitted, solved))}


def with_layout(exportable: Exportable, layout: str) -> Callable:
    """The function on the exported input layout; NCHW inputs and NCHW image outputs for `nchw`."""
    if layout == "nhwc":
        return exportable.fn

    def fn(pixels_nchw):
        outs = exportable.fn(jnp.transpose(pixels_nchw, (0, 2, 3, 1)))
        return tuple(jnp.transpose(o, (0, 3, 1, 2)) if o.ndim == 4 else o for o in outs)
    return fn


def input_shape(exportable: Exportable, batch: int, layout: str) -> tuple[int, ...]:
    h, w = exportable.height, exportable.width
    return (batch, 3, h, w) if layout == "nchw" else (batch, h, w, 3)


def build_onnx(exportable: Exportable, batch: int = 1, dynamic_batch: bool = False, opset: int = DEFAULT_OPSET,
               layout: str = "nchw", precision: str = "fp32"):
    """The checked ONNX model (onnx.ModelProto) of `exportable`."""
    if layout not in LAYOUTS:
        raise ExportError(f"layout '{layout}' is unknown; choose one of {', '.join(LAYOUTS)}")
    if precision not in PRECISIONS:
        raise ExportError(f"ONNX precision '{precision}' is not supported; choose one of {', '.join(PRECISIONS)} "
                          "(int8 is a TensorRT engine option)")
    spec = jax.ShapeDtypeStruct(input_shape(exportable, batch, layout), jnp.float32)
    with grouped_conv():
        model = to_onnx(with_layout(exportable, layout), [spec], ["image"], list(exportable.output_names),
                        opset=opset, float16=precision == "fp16", dynamic_batch=dynamic_batch,
                        graph_name=exportable.name, doc=f"jaxvision {exportable.name}: see the sidecar JSON")
    check(model)
    return model


def onnx_dims(model) -> tuple[list, dict]:
    """(input dims, {output: dims}) of an ONNX model; the dynamic batch dimension is named 'batch'."""
    def dims(value_info):
        return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]
    return dims(model.graph.input[0]), {o.name: dims(o) for o in model.graph.output}


def sidecar(exportable: Exportable, fmt: str, input_dims: list, output_dims: dict, layout: str, precision: str,
            dynamic_batch: bool, **format_fields) -> dict:
    """The JSON that travels with the exported graph; `format_fields` as opset (ONNX) or signature (SavedModel)."""
    return {
        "model": exportable.name, "format": fmt, **format_fields, "precision": precision,
        "input": {"name": "image", "layout": layout.upper(), "shape": input_dims, "dtype": "float32",
                  "color": "RGB", "range": [0.0, PIXEL_SCALE], "height": exportable.height,
                  "width": exportable.width, "dynamic_batch": dynamic_batch,
                  "normalisation": f"x / {PIXEL_SCALE:g} inside the graph"},
        "outputs": {name: {"shape": dims, "meaning": exportable.meta["outputs"][name]}
                    for name, dims in output_dims.items()},
        **{k: v for k, v in exportable.meta.items() if k != "outputs"},
    }


def save_onnx(model, meta: dict, out: str) -> list[str]:
    """Writes `out` (.onnx) and `out` with .json, each atomically; returns both paths."""
    meta_path = os.path.splitext(out)[0] + ".json"
    try:
        write_atomic(out, model.SerializeToString())
        try:
            write_atomic(meta_path, json.dumps(meta, indent=2) + "\n")
        except BaseException:
            os.remove(out)
            raise
    except OSError as e:
        raise ExportError(f"cannot write {e.filename or out}: {e.strerror or e}") from None
    return [out, meta_path]


@dataclasses.dataclass
class Difference:
    output: str
    max_abs: float
    mean_abs: float
    limit: float          # allowed max_abs (float outputs) or mismatch fraction (integer outputs)
    mismatch: float | None = None
    batch: int | None = None

    @property
    def ok(self) -> bool:
        return (self.mismatch if self.mismatch is not None else self.max_abs) <= self.limit


def compare(reference: tuple, outputs: list, names: tuple[str, ...], precision: str,
            batch: int | None = None) -> list[Difference]:
    """Per-output max / mean absolute difference of `outputs` against `reference` (JAX), with its limit."""
    diffs = []
    for name, ref, out in zip(names, reference, outputs):
        ref, out = np.asarray(ref), np.asarray(out)
        if ref.shape != out.shape:
            raise ExportError(f"output '{name}': exported shape {out.shape}, JAX shape {ref.shape}")
        err = np.abs(out.astype(np.float64) - ref.astype(np.float64))
        if np.issubdtype(ref.dtype, np.integer):
            diffs.append(Difference(name, float(err.max()), float(err.mean()), LABEL_MISMATCH[precision],
                                    mismatch=float(np.mean(out != ref)), batch=batch))
        else:
            limit = TOLERANCE[precision] * max(1.0, float(np.abs(ref).max()))
            diffs.append(Difference(name, float(err.max()), float(err.mean()), limit, batch=batch))
    return diffs


def compare_on_random_pixels(exportable: Exportable, run, layout: str, precision: str, batches=(1,),
                             seed: int = 0) -> list[Difference]:
    """Runs the exported graph (`run`: pixels -> list of outputs) and the JAX function on the same random pixels,
    one batch size after the other."""
    fn = jax.jit(with_layout(exportable, layout))
    rng = np.random.default_rng(seed)
    diffs = []
    for batch in batches:
        pixels = rng.uniform(0, PIXEL_SCALE, input_shape(exportable, batch, layout)).astype(np.float32)
        diffs += compare(jax.device_get(fn(pixels)), run(pixels), exportable.output_names, precision, batch)
    return diffs


def verify_onnx(exportable: Exportable, onnx_bytes: bytes, layout: str, precision: str, batches=(1,),
                seed: int = 0) -> list[Difference]:
    """Runs the ONNX graph in ONNX Runtime (CPU) and the JAX function on the same random pixels."""
    import onnxruntime as ort
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    return compare_on_random_pixels(exportable, lambda pixels: session.run(None, {"image": pixels}), layout,
                                    precision, batches, seed)


def format_differences(diffs: list[Difference]) -> str:
    """A Markdown table of the differences, one row per output (and batch size)."""
    lines = ["| batch | output | max abs diff | mean abs diff | limit | ok |", "|---:|---|---:|---:|---:|---|"]
    for d in diffs:
        limit = f"{d.limit:.1e}" + (f" (labels differing: {d.mismatch:.2%})" if d.mismatch is not None else "")
        lines.append(f"| {'' if d.batch is None else d.batch} | {d.output} | {d.max_abs:.3e} | {d.mean_abs:.3e} | "
                     f"{limit} | {'yes' if d.ok else 'NO'} |")
    return "\n".join(lines)


def trtexec_command(onnx_path: str, precision: str, dynamic_batch: bool, batch: int, meta: dict) -> str:
    """The `trtexec` line that builds the engine on the target (Jetson) from the exported ONNX."""
    engine = os.path.splitext(onnx_path)[0] + ".engine"
    cmd = f"trtexec --onnx={onnx_path} --saveEngine={engine}"
    if precision in ("fp16", "int8"):
        cmd += f" --{precision}"
    if dynamic_batch:
        shape = "x".join(str(d) for d in meta["input"]["shape"][1:])
        cmd += f" --minShapes=image:1x{shape} --optShapes=image:{batch}x{shape} --maxShapes=image:{max(batch, 8)}x{shape}"
    return cmd


def build_tensorrt_engine(onnx_path: str, engine_path: str, precision: str) -> None:
    """Serialises a TensorRT engine built from `onnx_path` (FP32 / FP16) with the `tensorrt` Python API."""
    import tensorrt as trt
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(onnx_path):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision != "fp32":
        raise ExportError(f"TensorRT precision '{precision}' is not built here (fp32, fp16)")
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise ExportError(f"TensorRT failed to build an engine from {onnx_path}")
    write_atomic(engine_path, bytes(engine))


def tensorrt_available() -> str | None:
    """None when TensorRT and a CUDA GPU are usable here, else the reason."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "the tensorrt Python package is not installed"
    if not any(d.platform == "gpu" for d in jax.devices()):
        return "no CUDA GPU is visible"
    return None


def export(exportable: Exportable, out: str, fmt: str = "onnx", batch: int = 1, dynamic_batch: bool = False,
           opset: int = DEFAULT_OPSET, layout: str | None = None, precision: str = "fp32", verify: bool = False,
           log=print) -> list[str]:
    """Exports `exportable` to `out`; with `verify`, checks the exported graph (ONNX Runtime, or TensorFlow for a
    SavedModel) against JAX and raises above tolerance. `layout` defaults to NCHW (NHWC for a SavedModel)."""
    if fmt not in FORMATS:
        raise ExportError(f"format '{fmt}' is unknown; choose one of {', '.join(FORMATS)}")
    if fmt == "savedmodel":
        from jaxvision.export import savedmodel
        return savedmodel.save(exportable, out, batch, dynamic_batch, layout or "nhwc", precision, verify, log)
    layout = layout or "nchw"
    onnx_precision = "fp32" if fmt == "tensorrt" else precision
    onnx_out = os.path.splitext(out)[0] + ".onnx" if fmt == "tensorrt" else out
    model = build_onnx(exportable, batch, dynamic_batch, opset, layout, onnx_precision)
    meta = sidecar(exportable, "onnx", *onnx_dims(model), layout, onnx_precision, dynamic_batch, opset=opset)
    data = model.SerializeToString()
    if verify:
        diffs = verify_onnx(exportable, data, layout, onnx_precision, batches=(1, 3) if dynamic_batch else (batch,))
        log(format_differences(diffs))
        bad = [d.output for d in diffs if not d.ok]
        if bad:
            raise ExportError(f"ONNX Runtime differs from JAX above tolerance on {', '.join(sorted(set(bad)))}; "
                              "nothing was written")
    paths = save_onnx(model, meta, onnx_out)
    if fmt == "tensorrt":
        reason = tensorrt_available()
        command = trtexec_command(onnx_out, precision, dynamic_batch, batch, meta)
        if reason is not None:
            raise ExportError(f"cannot build a TensorRT engine here ({reason}). The ONNX graph is written to "
                              f"{onnx_out}; on the Jetson run:\n  {command}")
        build_tensorrt_engine(onnx_out, out, precision)
        paths.append(out)
    return paths
