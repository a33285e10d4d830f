"""The training engine end to end through the real CLI: data parallelism, resume, bad inputs."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import QUICKSTART, ROOT, TINY, cli_env, load_params, run_cli


def assert_same_params(a: dict, b: dict, atol: float, rtol: float = 0.0):
    assert a.keys() == b.keys()
    worst = max(float(np.max(np.abs(a[k] - b[k]) / (atol + rtol * np.abs(b[k])))) for k in a)
    assert worst <= 1.0, f"params differ (worst ratio to tolerance {worst:.3g})"


def test_train_writes_logs_checkpoints_and_progress(one_device_run):
    workdir, proc = one_device_run
    lines = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
    train = [l for l in lines if "train/loss" in l]
    assert [l["step"] for l in train] == [1, 2, 3, 4]
    assert all(np.isfinite(l["train/loss"]) and l["train/images_per_s"] > 0 for l in train)
    evals = [l for l in lines if "eval/total" in l]
    assert evals and evals[-1]["step"] == 4
    assert np.isclose(evals[-1]["eval/total"], 100 * (evals[-1]["eval/miou"] - evals[-1]["eval/silog_rmse"]))
    assert sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit()) == [2, 4]
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(workdir, "tensorboard")))
    assert "img/s" in proc.stderr and "4/4" in proc.stderr  # the progress bar
    assert json.load(open(os.path.join(workdir, "config.json")))["train"]["num_steps"] == 4


def test_eight_devices_match_one_device(one_device_run, tmp_path):
    workdir_1, _ = one_device_run
    workdir_8 = str(tmp_path / "eight")
    run_cli(["train", "--workdir", workdir_8, "--config", QUICKSTART, *TINY], devices=8)
    assert_same_params(load_params(workdir_8), load_params(workdir_1), atol=2e-5, rtol=1e-4)


def test_eval_writes_table_and_picture(one_device_run):
    workdir, _ = one_device_run
    proc = run_cli(["eval", "--workdir", workdir])
    assert "miou" in proc.stdout.lower()
    results = json.load(open(os.path.join(workdir, "eval_metrics.json")))
    assert results["step"] == 4 and np.isclose(results["total"], 100 * (results["miou"] - results["silog_rmse"]))
    from PIL import Image
    with Image.open(os.path.join(workdir, "predictions.png")) as im:
        assert im.size[0] > 5 * 64 and im.size[1] >= 2 * 32


def test_sigterm_saves_and_resume_is_bit_identical(one_device_run, tmp_path):
    workdir_ref, _ = one_device_run
    workdir = str(tmp_path / "interrupted")
    args = [sys.executable, "-m", "jaxvision.cli", "train", "--workdir", workdir, "--config", QUICKSTART, *TINY,
            "--config.train.checkpoint_every=100"]
    proc = subprocess.Popen(args, env=cli_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = os.path.join(workdir, "metrics.jsonl")
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(log) and any('"train/loss"' in line for line in open(log)):
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.05)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert "stopped by SIGTERM at step" in stderr and "run the same command to resume" in stderr
    stopped_at = int(stderr.split("stopped by SIGTERM at step ")[1].split(";")[0])
    assert 1 <= stopped_at < 4
    assert os.path.isdir(os.path.join(workdir, "checkpoints", str(stopped_at)))
    resumed = run_cli(["train", "--workdir", workdir, "--config", QUICKSTART, *TINY,
                       "--config.train.checkpoint_every=100"])
    assert "resuming from" in resumed.stdout
    a, b = load_params(workdir, 4), load_params(workdir_ref, 4)
    assert all(np.array_equal(a[k], b[k]) for k in a), "resumed run differs from the uninterrupted one"
    steps = [json.loads(l)["step"] for l in open(log) if "train/loss" in l]
    assert steps == [1, 2, 3, 4]  # no duplicated log lines after resume


def test_nan_loss_stops_and_keeps_last_good_checkpoint(one_device_run, tmp_path):
    workdir = str(tmp_path / "nan")
    run_cli(["train", "--workdir", workdir, "--config", QUICKSTART, *TINY, "--config.train.num_steps=2"])
    proc = run_cli(["train", "--workdir", workdir, "--config", QUICKSTART, *TINY,
                    "--config.loss.silog_lambda=nan"], check=False)
    assert proc.returncode == 1
    assert "loss became NaN/Inf at step 3" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2"]
    np.testing.assert_array_equal(list(load_params(workdir).values())[0],
                                  list(load_params(one_device_run[0], 2).values())[0])


@pytest.mark.parametrize("damage, message", [
    ("data", "cannot (read|restore) checkpoint"),  # array store truncated
    ("metadata", "cannot read checkpoint"),         # tree metadata truncated
])
def test_corrupt_checkpoint_is_an_error_not_a_restart(one_device_run, tmp_path, damage, message):
    import shutil
    workdir = str(tmp_path / "corrupt")
    shutil.copytree(one_device_run[0], workdir)
    shutil.rmtree(os.path.join(workdir, "checkpoints", "2"))
    damaged = 0
    for folder, _, files in os.walk(os.path.join(workdir, "checkpoints", "4")):
        for name in files:
            hit = os.path.basename(folder) == "d" if damage == "data" else name == "_METADATA"
            if hit:
                with open(os.path.join(folder, name), "r+b") as f:
                    f.truncate(7)
                damaged += 1
    assert damaged
    proc = run_cli(["train", "--workdir", workdir, "--config", QUICKSTART, *TINY, "--config.train.num_steps=6"],
                   check=False)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert re.search(f"{message} {re.escape(workdir)}/checkpoints/4", proc.stderr), proc.stderr
    # No traceback through our code (Orbax's asyncio thread may print "Event loop is closed" noise at exit).
    assert not re.search(r'File "[^"]*jaxvision/', proc.stderr), proc.stderr
    assert not os.path.exists(os.path.join(workdir, "checkpoints", "6"))


def test_checkpoint_of_another_model_is_rejected(one_device_run):
    proc = run_cli(["eval", "--workdir", one_device_run[0], "--config", QUICKSTART, *TINY,
                    "--config.model.decoder_channels=48"], check=False)
    assert proc.returncode == 1
    assert "checkpoints/4 does not fit the model" in proc.stderr and "has shape" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_unknown_config_key_is_one_line(tmp_path):
    proc = run_cli(["train", "--workdir", str(tmp_path), "--config", QUICKSTART, "--config.train.lr=1"], check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        proc.stderr.strip()] and "unknown config key 'train.lr'" in proc.stderr


def test_missing_config_file(tmp_path):
    proc = run_cli(["train", "--workdir", str(tmp_path), "--config", "configs/nope.py"], check=False)
    assert proc.returncode == 2 and "config file not found: configs/nope.py" in proc.stderr


def test_unwritable_workdir(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    proc = run_cli(["train", "--workdir", str(blocker / "run"), "--config", QUICKSTART, *TINY], check=False)
    assert proc.returncode == 1 and f"cannot write to workdir {blocker / 'run'}" in proc.stderr


def test_workdir_without_permission(tmp_path):
    """A folder nobody may write to (immutable, so even root is refused)."""
    import shutil
    locked = tmp_path / "locked"
    locked.mkdir()
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(locked)]).returncode != 0:
        pytest.skip("chattr +i is not available on this filesystem")
    try:
        proc = run_cli(["train", "--workdir", str(locked / "run"), "--config", QUICKSTART, *TINY], check=False)
    finally:
        subprocess.run(["chattr", "-i", str(locked)])
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert f"cannot write to workdir {locked / 'run'}: Operation not permitted" in proc.stderr
    assert "Traceback" not in proc.stderr
