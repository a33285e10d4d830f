"""A driver-monitoring run end to end through the CLI: train (with SWA) on synthetic faces, eval, export with
parity, the JAX-free runtime and saliency maps."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxvision import models
from jaxvision.tasks import dms as dms_task
from jaxvision.train import swa
from conftest import run_cli

SIZE = 48
TINY_DMS = ["--config", "configs/dms/tiny.py", f"--config.data.height={SIZE}", f"--config.data.width={SIZE}",
            "--config.data.num_train=64", "--config.data.num_val=6", "--config.data.num_threads=1",
            "--config.train.batch_size=4", "--config.train.num_steps=4", "--config.train.log_every=2",
            "--config.train.eval_every=4", "--config.train.checkpoint_every=4", "--config.eval.batch_size=4",
            "--config.optimizer.lr=1e-3", "--config.swa.enabled=True", "--config.swa.start_step=2",
            "--config.swa.every=1", "--config.swa.bn_batches=2"]


@pytest.fixture(scope="module")
def dms_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("dms_run"))
    proc = run_cli(["train", "--workdir", workdir, *TINY_DMS])
    return workdir, proc


def test_training_with_swa_averages_and_evaluates(dms_run):
    workdir, proc = dms_run
    assert "SWA: weights averaged over 3 snapshots" in proc.stdout
    final = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))][-1]
    assert final["step"] == 4
    for key in ("eval/nme", "eval/eyes_accuracy", "eval/mouth_accuracy", "eval/yaw_mae", "eval/distraction_f1"):
        assert np.isfinite(final[key]), key
    assert 0 <= final["eval/eyes_accuracy"] <= 1


def test_eval_writes_metrics_table_and_face_grid(dms_run):
    workdir, _ = dms_run
    proc = run_cli(["eval", "--workdir", workdir])
    assert "NME" in proc.stdout and "Head (yaw, pitch, roll)" in proc.stdout
    grid = Image.open(os.path.join(workdir, "predictions.png"))
    assert grid.size[0] > 4 * 192


def test_export_verify_and_jax_free_runtime(dms_run, tmp_path):
    workdir, _ = dms_run
    out = str(tmp_path / "dms.onnx")
    run_cli(["export", "--workdir", workdir, "--out", out, "--verify"])
    meta = json.load(open(str(tmp_path / "dms.json")))
    assert meta["task"] == "dms" and meta["distraction_classes"] == ["normal", "phone", "smoking"]
    assert list(meta["outputs"]) == ["landmarks", "eyes", "mouth", "head_pose", "distraction"]
    face = (np.random.default_rng(0).uniform(0, 255, (64, 48, 3))).astype(np.uint8)
    Image.fromarray(face).save(tmp_path / "face.png")
    code = ("import sys, json; from jaxvision.export.runtime import main; "
            f"rc = main([{out!r}, {str(tmp_path / 'face.png')!r}, '--out', {str(tmp_path / 'p')!r}]); "
            "assert 'jax' not in sys.modules, 'runtime imported jax'; sys.exit(rc)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=os.getcwd())
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.splitlines()[0])
    assert set(summary) == {"eyes", "mouth", "distraction", "head_pose_deg"}
    assert summary["mouth"] in ("closed", "semi_open", "open")
    assert Image.open(tmp_path / "p_landmarks.png").size == (48, 64)


def test_saliency_maps_explain_the_chosen_class(tmp_path):
    model = models.create("dms_tiny")
    images = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (2, SIZE, SIZE, 3)), jnp.float32)
    variables = model.init(jax.random.PRNGKey(0), images, train=False)
    maps, targets = dms_task.saliency_maps(model, variables, images, "distraction", target=1)
    assert set(maps) == {"gradient", "score_cam"} and list(targets) == [1, 1]
    for values in maps.values():
        assert values.shape == (2, SIZE, SIZE) and values.min() >= 0 and np.isclose(values.max(), 1.0)
    path = str(tmp_path / "saliency.png")
    dms_task.save_saliency(path, model, variables, images, "mouth")
    assert Image.open(path).size[0] > 3 * SIZE
    with pytest.raises(ValueError, match="saliency task 'head_pose' has no class scores"):
        dms_task.saliency_maps(model, variables, images, "head_pose")


def test_swa_schedule_of_the_release_config():
    """lr 4e-4 until epoch 250, linear to 2e-4 over 10 epochs, then flat (E = 142 steps per epoch)."""
    from jaxvision.config import load_config_file
    from jaxvision.train.optim import make_optimizer
    config = load_config_file("configs/dms/small.py")
    config.optimizer.update(name="sgd", lr=4e-4)
    config.schedule.name = "swa"
    _, schedule = make_optimizer(config, config.train.num_steps)
    e = 142
    np.testing.assert_allclose([float(schedule(s)) for s in (0, 250 * e, 255 * e, 260 * e, 299 * e)],
                               [4e-4, 4e-4, 3e-4, 2e-4, 2e-4], rtol=1e-5)
    assert swa.should_snapshot(251 * e, config.swa.start_step, config.swa.every)


def test_saliency_command_on_the_run(dms_run, tmp_path):
    workdir, _ = dms_run
    out = str(tmp_path / "s.png")
    proc = run_cli(["saliency", "--workdir", workdir, "--task", "distraction", "--target", "phone", "--num", "3",
                    "--out", out])
    assert "3 faces" in proc.stdout
    assert Image.open(out).size[1] > 3 * SIZE
    bad = run_cli(["saliency", "--workdir", workdir, "--target", "tea"], check=False)
    assert bad.returncode == 1 and "--target tea: distraction has normal, phone, smoking" in bad.stderr
    bad = run_cli(["saliency", "--workdir", workdir, "--task", "head_pose"], check=False)
    assert bad.returncode == 1 and "--task head_pose: choose one of eyes, mouth, distraction" in bad.stderr


def test_swa_without_a_snapshot_is_named():
    """swa.start_step after the last step: the average is empty and the run says why."""
    from types import SimpleNamespace
    from jaxvision.config import load_config_file
    from jaxvision.train.loop import apply_swa
    from jaxvision.train.optim import make_optimizer
    config = load_config_file("configs/dms/tiny.py")
    config.swa.update(enabled=True, start_step=10, every=1)
    config.train.num_steps = 5
    tx, _ = make_optimizer(config, config.train.num_steps)
    state = SimpleNamespace(opt_state=tx.init({"w": jnp.zeros(2)}))
    with pytest.raises(ValueError, match="SWA took no snapshot: swa.start_step=10 is after the last step 5"):
        apply_swa(config, state, mesh=None)
