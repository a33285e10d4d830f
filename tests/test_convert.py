"""Weight import: the torch-free .pth / .safetensors readers, the converter's names and layouts (round trip
through a state dict built from jaxvision's own weights), its error reports, the on-disk format, and
logits parity against torchvision / timm where they import."""

import os
import pickle
import zipfile

import jax
import numpy as np
import pytest
from flax import traverse_util

from conftest import run_cli
from jaxvision import models
from jaxvision.convert.converter import abstract_variables
from jaxvision.convert import (ConversionError, WeightFileError, convert_state_dict, convert_weights,
                               export_state_dict, load_pretrained, read_state_dict, write_safetensors)

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "torch_state_dict.pth")
# (jaxvision model, options, source) covering every naming function, at small sizes.
ROUND_TRIPS = [
    ("resnet18", {}, "torchvision"),
    ("se_resnet18", {}, "timm"),
    ("mobilenet_v2_050", {}, "torchvision"),
    ("efficientnet_b0", {}, "torchvision"),
    ("efficientnet_b1", {}, "timm"),
    ("vit_tiny_patch16", {"image_size": 32}, "timm"),
    ("vit_tiny_patch16", {"image_size": 32}, "torchvision"),
    ("regnet_y_400mf", {}, "torchvision"),
    ("regnet_y_400mf", {}, "timm"),
]


def _random_variables(model) -> dict:
    """Variables of `model` with every array random (shapes from an abstract init, nothing compiled);
    BatchNorm variances and scales in [0.5, 1.5], so logits stay moderate."""
    rng = np.random.default_rng(1)
    flat = {path: (rng.uniform(0.5, 1.5, s.shape) if path[-1] in ("var", "scale") else
                   rng.normal(0.0, 0.5 / np.sqrt(max(1, np.prod(s.shape[:-1]))), s.shape)).astype(np.float32)
            for path, s in abstract_variables(model).items()}
    return traverse_util.unflatten_dict(flat)


def _logits(model, variables, x):
    return np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x))


def test_pth_reader_matches_torch_save_fixture():
    """tests/fixtures/torch_state_dict.pth was written by torch.save (torch 2.14): a {'state_dict': ...} wrapper,
    'module.' prefixes, float16, a transposed view, a view at a storage offset and an nn.Parameter."""
    sd = read_state_dict(FIXTURE)
    base = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    assert sorted(sd) == ["bn.num_batches_tracked", "bn.running_var", "conv.weight", "fc.weight", "half",
                          "offset_view", "transposed"]
    np.testing.assert_array_equal(sd["conv.weight"], np.arange(54, dtype=np.float32).reshape(2, 3, 3, 3) / 10)
    np.testing.assert_array_equal(sd["bn.running_var"], [1.5, 2.5])
    assert sd["bn.num_batches_tracked"].dtype == np.int64 and int(sd["bn.num_batches_tracked"]) == 7
    assert sd["half"].dtype == np.float16
    np.testing.assert_array_equal(sd["half"], np.array([0.5, -2.0, 65504.0], np.float16))
    np.testing.assert_array_equal(sd["transposed"], base.transpose(2, 1, 0))
    np.testing.assert_array_equal(sd["offset_view"], [5, 6, 7, 8])
    np.testing.assert_array_equal(sd["fc.weight"], np.full((3, 2), -1.25, np.float32))


def test_safetensors_round_trip(tmp_path):
    tensors = {"a.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, -2], np.int64),
               "c": np.array([0.25], np.float16)}
    path = str(tmp_path / "w.safetensors")
    write_safetensors(tensors, path)
    back = read_state_dict(path)
    assert sorted(back) == sorted(tensors)
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype
        np.testing.assert_array_equal(back[k], v)
    assert os.listdir(tmp_path) == ["w.safetensors"]


def test_reader_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        read_state_dict(str(tmp_path / "nope.pth"))
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(open(FIXTURE, "rb").read()[:1500])
    with pytest.raises(WeightFileError, match="truncated.pth"):
        read_state_dict(str(truncated))
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(WeightFileError, match="garbage.safetensors"):
        read_state_dict(str(garbage))


def test_reader_refuses_code_in_the_pickle(tmp_path):
    """A .pth whose pickle references anything but tensors and dicts (here os.system) is refused, not run."""
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/data.pkl", pickle.dumps({"w": Evil()}, protocol=2))
    with pytest.raises(WeightFileError, match=r"evil.pth.*(posix|os)\.system"):
        read_state_dict(str(path))
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("name,options,source", ROUND_TRIPS, ids=lambda v: v if isinstance(v, str) else "")
def test_export_then_convert_is_identity(name, options, source):
    """jaxvision -> PyTorch names/layouts -> jaxvision gives back every array exactly, and the exported
    keys are the ones torchvision / timm use (checked by the parity tests where those import)."""
    model = models.create(name, **options)
    variables = _random_variables(model)
    state_dict = export_state_dict(variables, model, source)
    assert not any(k.startswith(("params", "batch_stats")) or "/" in k for k in state_dict)
    back = convert_state_dict(state_dict, model, source)
    assert jax.tree.structure(back) == jax.tree.structure(jax.tree.map(np.asarray, variables))
    for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(back)):
        np.testing.assert_array_equal(np.asarray(a), b)


def test_layouts_of_known_keys():
    """Hand-checked layouts: conv OIHW -> HWIO, Linear [out, in] -> kernel [in, out], SE 1x1 conv -> Dense,
    BatchNorm running stats -> batch_stats."""
    model = models.create("se_resnet18", num_classes=5)
    variables = _random_variables(model)
    sd = export_state_dict(variables, model, "timm")
    stem = np.asarray(variables["params"]["stem"]["conv"]["kernel"])  # [7, 7, 3, 64]
    assert sd["conv1.weight"].shape == (64, 3, 7, 7)
    assert sd["conv1.weight"][10, 2, 1, 4] == stem[1, 4, 2, 10]
    assert sd["fc.weight"].shape == (5, 512)
    np.testing.assert_array_equal(sd["fc.weight"], np.asarray(variables["params"]["head"]["kernel"]).T)
    se = np.asarray(variables["params"]["layer1_0"]["se"]["fc1"]["kernel"])  # [64, 8]
    assert sd["layer1.0.se.fc1.weight"].shape == (8, 64, 1, 1)
    np.testing.assert_array_equal(sd["layer1.0.se.fc1.weight"][:, :, 0, 0], se.T)
    np.testing.assert_array_equal(sd["layer2.0.downsample.1.running_var"],
                                  variables["batch_stats"]["layer2_0"]["downsample"]["norm"]["var"])
    assert sd["layer2.0.downsample.1.num_batches_tracked"] == 0


def test_conversion_errors_name_every_problem():
    model = models.create("resnet18", num_classes=10)
    sd = export_state_dict(_random_variables(model), model, "torchvision")
    del sd["layer3.1.bn2.running_mean"]
    sd["layer9.0.conv1.weight"] = np.zeros((1,), np.float32)
    sd["fc.weight"] = np.zeros((1000, 512), np.float32)
    with pytest.raises(ConversionError) as info:
        convert_state_dict(sd, model, "torchvision")
    message = str(info.value)
    assert "1 missing keys: layer3.1.bn2.running_mean" in message
    assert "1 unexpected keys: layer9.0.conv1.weight" in message
    assert "fc.weight is [1000, 512] in the file, the model needs [10, 512]" in message
    with pytest.raises(ValueError, match="no timm weight names for MobileNetV2"):
        convert_state_dict(sd, models.create("mobilenet_v2"), "timm")
    with pytest.raises(ValueError, match="weight source 'caffe' is unknown"):
        convert_state_dict(sd, model, "caffe")


def test_convert_weights_writes_loadable_dir_atomically(tmp_path):
    model = models.create("resnet18", num_classes=7)
    variables = _random_variables(model)
    weights = str(tmp_path / "r18.safetensors")
    write_safetensors(export_state_dict(variables, model, "torchvision"), weights)

    out = str(tmp_path / "converted")
    meta = convert_weights(weights, "resnet18", "torchvision", out, num_classes=7)
    assert meta["model"] == "resnet18" and meta["model_options"] == {"num_classes": 7}
    assert meta["num_params"] == 11_180_103  # resnet18 with a 7-way head: 11,689,512 - 513 * 993
    loaded, meta2 = load_pretrained(out, model)
    assert meta2 == meta
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_array_equal(_logits(model, loaded, x), _logits(model, variables, x))

    with pytest.raises(FileExistsError, match="converted already exists"):
        convert_weights(weights, "resnet18", "torchvision", out, num_classes=7)
    with pytest.raises(ConversionError, match="do not fit"):
        load_pretrained(out, models.create("resnet18", num_classes=8))
    # A failing conversion (wrong head size) leaves no directory, temporary or final, behind.
    with pytest.raises(ConversionError):
        convert_weights(weights, "resnet18", "torchvision", str(tmp_path / "bad"), num_classes=3)
    assert sorted(os.listdir(tmp_path)) == ["converted", "r18.safetensors"]


def test_convert_weights_cli(tmp_path):
    model = models.create("mobilenet_v2_050", num_classes=4)
    weights = str(tmp_path / "mnv2.safetensors")
    write_safetensors(export_state_dict(_random_variables(model), model, "torchvision"), weights)
    out = str(tmp_path / "out")
    result = run_cli(["convert-weights", "--from", "torchvision", "--model", "mobilenet_v2_050", "--in", weights,
                      "--out", out, "--model.num_classes=4"])
    assert result.returncode == 0, result.stderr
    # mobilenet_v2_050 has 1,968,680 parameters with the 1000-way head (1280 * 1000 + 1000); a 4-way head has 5,124.
    assert "692,804 parameters" in result.stdout
    assert load_pretrained(out, model)[1]["model_options"] == {"num_classes": 4}

    bad = run_cli(["convert-weights", "--from", "torchvision", "--model", "mobilenet_v2_050", "--in", weights,
                   "--out", str(tmp_path / "out2")], check=False)  # 1000-way head expected, 4-way in the file
    assert bad.returncode == 1
    assert "classifier.1.weight is [4, 1280] in the file, the model needs [1000, 1280]" in bad.stderr
    assert not os.path.exists(tmp_path / "out2")
    missing = run_cli(["convert-weights", "--from", "torchvision", "--model", "resnet18", "--in",
                       str(tmp_path / "none.pth"), "--out", str(tmp_path / "out3")], check=False)
    assert missing.returncode == 1 and "none.pth does not exist" in missing.stderr


# --- parity with the PyTorch originals (needs torch, torchvision and timm: the `parity` extra) ---------------------

PARITY = [  # (source, PyTorch name, jaxvision name, options)
    ("torchvision", "resnet50", "resnet50", {}),
    ("torchvision", "resnext50_32x4d", "resnext50_32x4d", {}),
    ("timm", "seresnet50", "se_resnet50", {}),
    ("torchvision", "mobilenet_v2", "mobilenet_v2", {}),
    ("torchvision", "efficientnet_b0", "efficientnet_b0", {}),
    ("timm", "efficientnet_b2", "efficientnet_b2", {}),
    ("timm", "vit_small_patch16_224", "vit_small_patch16", {}),
    ("torchvision", "vit_b_16", "vit_base_patch16", {}),
    ("torchvision", "regnet_x_400mf", "regnet_x_400mf", {}),
    ("torchvision", "regnet_y_800mf", "regnet_y_800mf", {}),
    ("timm", "regnety_004", "regnet_y_400mf", {}),
    ("timm", "regnetx_008", "regnet_x_800mf", {}),
]


def _torch_model(source: str, name: str, x: np.ndarray):
    """A PyTorch model with every BatchNorm statistic and any all-zero parameter (zero-initialised heads and
    norms) randomised, so that each converted array affects the logits, and the classifier scaled so the
    logits of `x` peak at 20 in magnitude, as a trained ImageNet model's do (randomly initialised ResNets
    reach hundreds, which would turn float32 rounding alone into 1e-4 absolute differences)."""
    torch = pytest.importorskip("torch", reason="parity tests need torch (pip install -e .[parity])")
    if source == "torchvision":
        module = pytest.importorskip("torchvision", reason="parity tests need torchvision").models
        model = getattr(module, name)()
    else:
        model = pytest.importorskip("timm", reason="parity tests need timm").create_model(name)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for sub in model.modules():
            if isinstance(sub, torch.nn.BatchNorm2d):
                sub.running_mean.uniform_(-0.2, 0.2, generator=generator)
                sub.running_var.uniform_(0.5, 1.5, generator=generator)
        for p in model.parameters():
            if not p.any():
                p.normal_(0.0, 0.02, generator=generator)
        model.eval()
        classifier = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
        scale = 20.0 / model(torch.from_numpy(x.transpose(0, 3, 1, 2))).abs().max()
        classifier.weight.mul_(scale)
        classifier.bias.mul_(scale)
    return model


@pytest.mark.slow
@pytest.mark.parametrize("source,torch_name,name,options", PARITY, ids=[f"{c[0]}-{c[1]}" for c in PARITY])
def test_logits_match_pytorch(tmp_path, source, torch_name, name, options):
    """torch.save'd weights -> convert_weights -> load_pretrained give the PyTorch logits within 1e-4 (float32)."""
    x = np.random.default_rng(0).standard_normal((2, 224, 224, 3)).astype(np.float32)
    torch_model = _torch_model(source, torch_name, x)
    import torch
    path = str(tmp_path / f"{torch_name}.pth")
    torch.save(torch_model.state_dict(), path)
    convert_weights(path, name, source, str(tmp_path / "converted"), **options)
    model = models.create(name, **options)
    variables, _ = load_pretrained(str(tmp_path / "converted"), model)
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    got = _logits(model, variables, x)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
    assert sorted(export_state_dict(variables, model, source)) == sorted(torch_model.state_dict())
