"""The ADAS task end to end: synthetic scenes -> targets -> (perfect) outputs -> decoding -> metrics; the pipeline's
batches; and a tiny run through the CLI: train, eval, export with parity, the JAX-free runtime."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxvision.config import load_config_file
from jaxvision.data import adas_inputs, pipeline, synthetic
from jaxvision.tasks.adas import ADASTask
from conftest import run_cli

HEIGHT, WIDTH = 64, 128


def small_config():
    config = load_config_file("configs/adas/synthetic_cpu.py")
    config.data.update(height=HEIGHT, width=WIDTH, num_train=32, num_val=6, num_threads=1)
    config.eval.update(batch_size=4, lane_cluster_distance=6.0)
    return config


def perfect_outputs(batch: dict, tags: tuple, tag_classes: tuple) -> dict:
    """The outputs a perfect model gives: the target heatmaps, offsets and votes written at the target cells."""
    b, h, w, _ = batch["heatmap"].shape
    rows = np.arange(b)[:, None]

    def dense(index, values, mask, channels):
        out = np.zeros((b, h, w, channels), np.float32)
        keep = mask > 0
        out[np.broadcast_to(rows, keep.shape)[keep], index[..., 0][keep], index[..., 1][keep]] = values[keep]
        return out
    occlusion = np.where(batch["det_occluded"] > 0, 10.0, -10.0)[..., None].astype(np.float32)
    return {"heatmap": batch["heatmap"], "lane_heatmap": batch["lane_heatmap"],
            "box_offsets": dense(batch["det_index"], batch["det_offsets"], batch["det_mask"], 4),
            "occlusion": dense(batch["det_index"], occlusion, batch["det_mask"], 1) - 10 * (1 - dense(
                batch["det_index"], np.ones_like(occlusion), batch["det_mask"], 1)),
            "lane_offsets": dense(batch["lane_index"], batch["lane_votes"], batch["lane_mask"], 2),
            **{tag: 10 * np.eye(n, dtype=np.float32)[batch[tag]] for tag, n in zip(tags, tag_classes)}}


def test_perfect_outputs_decode_to_full_marks():
    """Targets encoded from synthetic scenes, decoded and scored: boxes, occlusion and tags exact, lanes close."""
    config = small_config()
    config.data.update(height=128, width=256, num_val=8)
    config.eval.lane_cluster_distance = 6.0
    task = ADASTask(config)
    collected = None
    for batch in pipeline.make_eval_iterator(config.data, 4, 0, 1):
        outputs = perfect_outputs(batch, task.tags, tuple(task.tag_classes.values()))
        results = jax.tree.map(np.asarray, jax.jit(task.eval_sums)(outputs, batch))
        collected = task.accumulate(collected, results)
    metrics = task.finalize(collected)
    assert metrics["examples"] == 8
    assert metrics["map"] > 0.97            # only objects sharing a centre cell with another of their class are lost
    assert metrics["ap_car"] > 0.97
    assert metrics["occlusion_accuracy"] == 1.0
    assert metrics["lane_iou"] > 0.6         # fitted lanes through cell-quantised keypoints vs the true polylines
    for tag in task.tags:
        assert metrics[f"{tag}_f1"] == 1.0
    assert "mAP@0.5" in task.format(metrics)


def test_adas_batches_have_fixed_shapes_and_padding():
    config = small_config()
    adas = config.data.adas
    batch = next(pipeline.make_train_iterator(config.data, 4, seed=0, process_index=0, process_count=1))
    h, w = HEIGHT // 4, WIDTH // 4
    assert batch["image"].shape == (4, HEIGHT, WIDTH, 3) and batch["image"].dtype == np.float32
    assert batch["heatmap"].shape == (4, h, w, 3) and batch["lane_heatmap"].shape == (4, h, w, 2)
    assert batch["det_index"].shape == (4, adas.max_objects, 2) and batch["lane_votes"].shape == (4, adas.max_lane_points, 2)
    assert batch["gt_lanes"].shape == (4, adas.max_lanes, adas.lane_points, 2)
    for tag in adas.tags:
        assert batch[tag].shape == (4,)
    evaluation = list(pipeline.make_eval_iterator(config.data, 4, 0, 1))
    assert len(evaluation) == 2 and list(evaluation[-1]["mask"]) == [1, 1, 0, 0]
    assert not evaluation[-1]["gt_box_mask"][2:].any() and not evaluation[-1]["det_mask"][2:].any()


def test_synthetic_classes_become_detection_indices():
    example = synthetic.render_scene(0, 3, HEIGHT, WIDTH)
    classes = adas_inputs.detection_classes(example, "synthetic_scenes")
    names = [synthetic.DETECTION_CLASSES[c] for c in classes]
    expected = {synthetic.PERSON: "person", synthetic.CAR: "car", synthetic.TRUCK: "truck"}
    assert names == [expected[c] for c in example["box_classes"]]
    assert example["scene"] == len(sample_lines(3)) - 3


def sample_lines(index):
    return synthetic.sample_scene(0, index).lines


def test_unknown_loss_term_and_mismatched_tags_are_named():
    from jaxvision.config import ConfigError
    config = small_config()
    config.loss.weights.lane_iou = 1.0
    with pytest.raises(ConfigError, match="loss.weights has unknown term"):
        ADASTask(config)
    config = small_config()
    config.model.tags = (("weather", 4),)
    with pytest.raises(ConfigError, match="model.tags"):
        ADASTask(config)


TINY_ADAS = ["--config", "configs/adas/synthetic_cpu.py", f"--config.data.height={HEIGHT}",
             f"--config.data.width={WIDTH}", "--config.data.num_train=16", "--config.data.num_val=4",
             "--config.data.num_threads=1", "--config.model.name=cerberus", "--config.model.backbone=resnet18",
             "--config.model.neck_channels=16", "--config.model.head_channels=16", "--config.model.bifpn_repeats=1",
             "--config.train.batch_size=2", "--config.train.num_steps=2", "--config.train.log_every=1",
             "--config.train.eval_every=2", "--config.train.checkpoint_every=2", "--config.eval.batch_size=2",
             "--config.eval.lane_top_k=64", "--config.eval.top_k=20"]


@pytest.fixture(scope="module")
def adas_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("adas_run"))
    run_cli(["train", "--workdir", workdir, *TINY_ADAS])
    return workdir


def test_training_logs_every_loss_term_and_evaluates(adas_run):
    rows = [json.loads(line) for line in open(os.path.join(adas_run, "metrics.jsonl"))]
    train = [r for r in rows if "train/loss" in r][-1]
    for term in ("heatmap", "box_offsets", "occlusion", "lane_heatmap", "lane_offsets", "tags"):
        assert np.isfinite(train[f"train/loss_{term}"]), term
    final = rows[-1]
    assert final["step"] == 2 and 0 <= final["eval/weather_f1"] <= 1 and final["eval/examples"] == 4
    proc = run_cli(["eval", "--workdir", adas_run])
    assert "mAP@0.5" in proc.stdout and "lane IoU" in proc.stdout
    assert Image.open(os.path.join(adas_run, "predictions.png")).size[0] > 2 * 384


def test_export_verify_and_jax_free_runtime(adas_run, tmp_path):
    out = str(tmp_path / "cerberus.onnx")
    proc = run_cli(["export", "--workdir", adas_run, "--out", out, "--verify"])
    assert "boxes" in proc.stdout
    meta = json.load(open(str(tmp_path / "cerberus.json")))
    assert meta["task"] == "adas" and meta["class_names"] == list(synthetic.DETECTION_CLASSES)
    assert meta["tag_names"]["scene"] == list(synthetic.SCENE_TYPES) and meta["decoding"]["top_k"] == 20
    scene = synthetic.render_scene(5, 0, 2 * HEIGHT, 2 * WIDTH)["image"]
    Image.fromarray(scene).save(tmp_path / "scene.png")
    code = ("import sys, json; from jaxvision.export.runtime import main; "
            f"rc = main([{out!r}, {str(tmp_path / 'scene.png')!r}, '--out', {str(tmp_path / 'p')!r}]); "
            "assert 'jax' not in sys.modules, 'runtime imported jax'; sys.exit(rc)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=os.getcwd())
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.splitlines()[0])
    assert summary["weather"] in synthetic.WEATHERS and summary["scene"] in synthetic.SCENE_TYPES
    assert Image.open(tmp_path / "p_scene.png").size == (2 * WIDTH, 2 * HEIGHT)


def test_decoding_runs_inside_the_exported_graph(tmp_path):
    """The registry export of a Cerberus ends with the decoding; ONNX Runtime matches JAX on it."""
    from jaxvision.export import exporter
    exportable = exporter.from_registry("cerberus", HEIGHT, WIDTH, backbone="resnet18", neck_channels=8,
                                        head_channels=8, bifpn_repeats=1, num_classes=3, num_lane_classes=2,
                                        tags=(("weather", 4),))
    assert exportable.output_names[:4] == ("boxes", "scores", "classes", "occluded")
    model = exporter.build_onnx(exportable, batch=1, dynamic_batch=True)
    diffs = exporter.verify_onnx(exportable, model.SerializeToString(), "nchw", "fp32", batches=(1, 2))
    assert all(d.ok for d in diffs), exporter.format_differences(diffs)


def test_forward_only_export_gives_the_network_maps():
    """`bench latency --forward-only` times the network without decoding, as Table 3.4 does."""
    from jaxvision.export import exporter
    exportable = exporter.from_registry("cerberus", 32, 64, decode=False, backbone="resnet18", neck_channels=8,
                                        head_channels=8, bifpn_repeats=1, tags=(("weather", 4),))
    assert exportable.meta["task"] == "adas_network"
    assert exportable.output_names == ("heatmap", "box_offsets", "occlusion", "lane_heatmap", "lane_offsets", "weather")
    outputs = jax.jit(exportable.fn)(jnp.zeros((1, 32, 64, 3)))
    assert outputs[0].shape == (1, 8, 16, 10) and np.allclose(np.sum(outputs[-1], -1), 1.0)
