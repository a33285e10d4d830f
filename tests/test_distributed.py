"""Two real processes on localhost with jax.distributed (CPU collectives) train and agree."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import QUICKSTART, ROOT, TINY, cli_env, load_params


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_single_process(one_device_run, tmp_path):
    workdir = str(tmp_path / "two_procs")
    coordinator = f"127.0.0.1:{free_port()}"
    procs = []
    for pid in range(2):
        env = cli_env(devices=1, JAXVISION_COORDINATOR=coordinator, JAXVISION_NUM_PROCESSES="2",
                      JAXVISION_PROCESS_ID=str(pid))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "jaxvision.cli", "train", "--workdir", workdir, "--config", QUICKSTART, *TINY],
            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    ours, reference = load_params(workdir), load_params(one_device_run[0])
    worst = max(float(np.max(np.abs(ours[k] - reference[k]))) for k in ours)
    assert worst < 1e-4, f"two-process params differ from the single-process run by {worst}"
    # only process 0 logs
    steps = [line for line in open(os.path.join(workdir, "metrics.jsonl")) if "train/loss" in line]
    assert len(steps) == 4
