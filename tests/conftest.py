"""Shared helpers: run the real `jaxvision` CLI in subprocesses on tiny configs."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision import models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(ROOT, "configs", "quickstart.py")

# A run small enough for CPU tests: ResNet-18 DeepLabv3+ at 32x64, SGD, a few steps.
TINY = [
    "--config.data.height=32", "--config.data.width=64", "--config.data.num_train=64", "--config.data.num_val=8",
    "--config.data.num_threads=1", "--config.train.batch_size=8", "--config.train.num_steps=4",
    "--config.train.log_every=1", "--config.train.eval_every=1000", "--config.train.checkpoint_every=2",
    "--config.eval.batch_size=8", "--config.eval.num_grid_images=2", "--config.optimizer.name=sgd",
    "--config.optimizer.lr=0.01", "--config.schedule.name=constant", "--config.schedule.warmup_steps=0",
    "--config.model.aspp_channels=32", "--config.model.decoder_channels=32", "--config.model.skip_channels=8",
]

TEXT_MODELS = {"bert_small", "bert_tiny"}
# The registry's image models, for the export sweeps. Larger siblings of a family already covered by a smaller
# one run with the slow tests (cerberus_rn34_simple too: its transposed convs have their own export test).
LARGER_SIBLINGS = {"resnet34", "resnet50", "resnet101", "se_resnet34", "se_resnet50", "mobilenet_v2", "mobilenet_v2_140",
                   "efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "regnet_x_800mf", "regnet_y_800mf",
                   "vit_small_patch16", "vit_base_patch16", "dms", "dms_small", "dms_large", "cerberus",
                   "cerberus_rn34_simple", "cerberus_rn34_bifpn", "cerberus_rn50_bifpn", "cerberus_rn101_bifpn",
                   "cerberus_effb2_bifpn"}
IMAGE_MODELS = [pytest.param(m, marks=pytest.mark.slow) if m in LARGER_SIBLINGS else m
                for m in models.list_models() if m not in TEXT_MODELS]


def cli_env(devices: int = 1, **extra) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = ROOT
    env.update(extra)
    return env


def run_cli(args, devices=1, check=True, timeout=600, **extra_env) -> subprocess.CompletedProcess:
    """Runs `python -m jaxvision.cli ARGS`; returns the completed process (stdout/stderr as text)."""
    proc = subprocess.run([sys.executable, "-m", "jaxvision.cli", *args], capture_output=True, text=True,
                          env=cli_env(devices, **extra_env), timeout=timeout, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"jaxvision {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def load_params(workdir: str, step: int | None = None) -> dict:
    """Flat {path: array} of the params of a checkpoint, read back with Orbax (no model needed)."""
    import jax
    import orbax.checkpoint as ocp
    directory = os.path.join(workdir, "checkpoints")
    steps = sorted(int(s) for s in os.listdir(directory) if s.isdigit())
    step = steps[-1] if step is None else step
    path = os.path.join(directory, str(step), "default")
    checkpointer = ocp.StandardCheckpointer()
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    like = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding),
                        checkpointer.metadata(path).item_metadata.tree)
    tree = checkpointer.restore(path, like)
    flat = jax.tree_util.tree_flatten_with_path(tree["params"])[0]
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in flat}


def abstract_init(model, shape=(1, 64, 64, 3), **kw):
    """Variable shapes of `model` on a zero input of `shape`, without computing anything."""
    return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(shape), train=False, **kw))


def abstract_features(model, shape=(1, 64, 64, 3)) -> dict:
    """Shapes of the features dict of a backbone, without computing anything."""
    v = abstract_init(model, shape)
    feats = jax.eval_shape(lambda v: model.apply(v, jnp.zeros(shape), train=False, features=True), v)
    return {k: f.shape for k, f in feats.items()}


@pytest.fixture
def tiny_args():
    return ["--config", QUICKSTART, *TINY]


@pytest.fixture(scope="session")
def one_device_run(tmp_path_factory):
    """A tiny 4-step run on one device, shared by the engine tests as the reference."""
    workdir = str(tmp_path_factory.mktemp("one_device"))
    proc = run_cli(["train", "--workdir", workdir, "--config", QUICKSTART, *TINY])
    return workdir, proc
