"""`jaxvision profile`: analytic MACs checked by hand, parameters, XLA cross-check, CLI and its usage errors."""

import json

import pytest
from flax import linen as nn

from conftest import abstract_init, run_cli
from jaxvision.models import count_params
from jaxvision import cli, models
from jaxvision.config import ConfigError
from jaxvision.layers.conv import ConvNormAct
from jaxvision.profile import format_profile, parse_input_shape, profile_model


class Tiny(nn.Module):
    """3x3 stride-2 ConvNormAct to 8 channels, global mean, Dense to 5."""

    @nn.compact
    def __call__(self, x, train):
        x = ConvNormAct(8, 3, 2, name="stem")(x, train)
        return nn.Dense(5, name="head")(x.mean(axis=(1, 2)))


def conv_macs(out_hw: int, out_ch: int, k: int, in_ch: int) -> int:
    return out_hw * out_hw * out_ch * k * k * in_ch


def test_tiny_model_counted_by_hand():
    p = profile_model(Tiny(), (1, 8, 8, 3))
    # 8x8 input, 3x3 stride 2 pad 1 -> 4x4x8: 16 * 8 * 27 MACs. Without the taps on padding: along an axis
    # output 0 reads rows -1, 0, 1 (2 inside), outputs 1..3 read 3 rows each -> 11 taps; 11 * 11 * 8 * 3.
    assert [(r.stage, r.modules, r.output) for r in p.rows[:2]] == [("stride 2", ["stem"], "1x4x4x8"),
                                                                     ("head", ["head"], "1x5")]
    stem, head = p.rows[:2]
    assert (stem.macs, stem.macs_no_pad) == (16 * 8 * 27, 11 * 11 * 8 * 3)
    assert head.macs == head.macs_no_pad == 8 * 5
    assert (stem.params, head.params) == (3 * 3 * 3 * 8 + 2 * 8, 8 * 5 + 5)  # conv + BN scale/bias; dense + bias
    assert p.params == 277 and p.macs == 16 * 8 * 27 + 40
    # XLA counts the conv without the padding taps, plus the elementwise BatchNorm / ReLU work.
    assert stem.macs_no_pad <= stem.macs_xla <= 1.15 * stem.macs_no_pad
    assert head.macs_xla == pytest.approx(40 + 5 / 2)  # the matmul plus the bias add (one flop = half a MAC)


def test_resnet18_224_matches_the_published_count():
    p = profile_model("resnet18", (1, 224, 224, 3), xla=False)

    def stage(hw, c):  # a strided BasicBlock with a 1x1 downsample, then a plain one
        return conv_macs(hw, c, 3, c // 2) + 3 * conv_macs(hw, c, 3, c) + conv_macs(hw, c, 1, c // 2)

    expected = (conv_macs(112, 64, 7, 3) + 4 * conv_macs(56, 64, 3, 64)
                + stage(28, 128) + stage(14, 256) + stage(7, 512) + 512 * 1000)
    assert p.macs == expected == 1_814_073_344  # torchvision's 1.81 GFLOPS (multiply-adds)
    assert [r.stage for r in p.rows] == ["stride 2", "stride 4", "stride 8", "stride 16", "stride 32", "head"]
    assert [r.output for r in p.rows] == ["1x112x112x64", "1x56x56x64", "1x28x28x128", "1x14x14x256",
                                          "1x7x7x512", "1x1000"]
    assert p.params == sum(r.params for r in p.rows) == 11_689_512
    assert p.macs_xla is None and all(r.macs_xla is None for r in p.rows)


def test_xla_agrees_with_the_analytic_count_on_resnet18():
    p = profile_model("resnet18", (1, 64, 64, 3), num_classes=10)
    assert p.params == count_params(abstract_init(models.create("resnet18", num_classes=10))["params"])
    # Conv-dominated rows: XLA = the no-padding taps plus a little elementwise work.
    for row in p.rows[:-1]:
        assert 1.0 <= row.macs_xla / row.macs_no_pad < 1.02, row
    assert p.rows[-1].stage == "other"  # max pool and global mean between the stages
    assert p.macs_xla == pytest.approx(sum(r.macs_xla for r in p.rows))
    assert 1.0 <= p.macs_xla / p.macs_no_pad < 1.02
    text = format_profile(p)
    table = text.splitlines()[1:len(p.rows) + 5]  # header, rule, rows, rule, total
    assert table[-1].startswith("total") and len({len(line) for line in table}) == 1  # aligned columns


def test_vit_counts_attention_matmuls():
    # 32x32 input: 4 patches + the class token = 5 tokens of width 192; per block qkv, proj, fc1, fc2 and
    # the two attention matmuls (q k^T and weights v, N * N * D each).
    p = profile_model("vit_tiny_patch16", (1, 32, 32, 3), xla=False)
    n, d = 5, 192
    block = n * d * (3 * d) + n * d * d + 2 * n * d * (4 * d) + 2 * n * n * d
    assert [r.stage for r in p.rows] == ["stride 16", "blocks", "norm", "head", "other"]
    assert p.rows[1].macs == 12 * block
    assert p.macs == 4 * d * 16 * 16 * 3 + 12 * block + d * 1000
    assert p.rows[-1].params == d + (1 + 14 * 14) * d  # cls_token and pos_embed belong to the model itself


def test_vit_xla_includes_attention():
    # At 224 the attention matmuls are ~17% of a block: without them the ratio would be ~1.2.
    p = profile_model("vit_tiny_patch16", (1, 224, 224, 3))
    assert 1.0 <= p.rows[1].macs_xla / p.rows[1].macs_no_pad < 1.1


def test_deeplab_dict_output():
    options = dict(encoder="resnet18", aspp_channels=16, decoder_channels=16, skip_channels=8)
    p = profile_model("deeplabv3plus", (1, 32, 32, 3), **options)
    assert [r.stage for r in p.rows][:3] == ["encoder", "stride 4", "heads"]
    assert p.rows[2].output == "depth:1x32x32, semseg:1x32x32x19"
    assert p.params == count_params(abstract_init(models.create("deeplabv3plus", **options), (1, 32, 32, 3))["params"])
    assert p.macs_xla > p.macs_no_pad > 0


def test_cli_prints_the_table_and_writes_json(tmp_path):
    out = tmp_path / "profile.json"
    proc = run_cli(["profile", "--model", "resnet18", "--input", "1x32x32x3", "--model.num_classes=10",
                    "--json", str(out)])
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("resnet18  input 1x32x32x3")
    assert any(line.startswith("stride 32") for line in lines) and any(line.startswith("total") for line in lines)
    data = json.loads(out.read_text())
    assert data["params"] == count_params(abstract_init(models.create("resnet18", num_classes=10))["params"])
    assert data["params"] == sum(r["params"] for r in data["rows"]) and data["macs_xla"] > 0
    assert [p.name for p in tmp_path.iterdir()] == ["profile.json"]  # no temporary file left


@pytest.mark.parametrize("args, message", [
    (["--model", "resnet_nope"], "unknown model 'resnet_nope'"),
    (["--model", "resnet18", "--input", "1x224x224"], "--input '1x224x224' is malformed"),
    (["--model", "resnet18", "--input", "1x0x32x3"], "is malformed"),
    (["--model", "resnet18", "--input", "axbxcxd"], "is malformed"),
    (["--model", "resnet18", "--model.depthh=3"], "has no option 'depthh'"),
    (["--model", "resnet18", "--model.num_classes=ten"], "expects an int"),
    (["--model", "resnet18", "--model.num_classes", "10"], "model options look like --model.num_classes=10"),
])
def test_cli_usage_errors(args, message, capsys):
    assert cli.main(["profile", *args]) == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_parse_input_shape():
    assert parse_input_shape("2x64x48x3") == (2, 64, 48, 3)
    with pytest.raises(ConfigError):
        parse_input_shape("2x64x48x3x1")
