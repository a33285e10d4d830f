"""Colours, the prediction grid and training curves: exact pixels, sizes, atomic writes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from matplotlib import colormaps
from PIL import Image

from jaxvision import visualize
from jaxvision.visualize import (CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, colorize_depth, colorize_semseg,
                                 plot_training_curves, save_prediction_grid)


def _plasma(t):
    return tuple(int(c * 255 + 0.5) for c in colormaps["plasma"](t)[:3])


def test_palette_is_the_cityscapes_one():
    assert CITYSCAPES_PALETTE.shape == (19, 3) and CITYSCAPES_PALETTE.dtype == np.uint8
    assert len(CITYSCAPES_CLASSES) == 19
    assert CITYSCAPES_CLASSES[0] == "road" and CITYSCAPES_CLASSES[13] == "car" and CITYSCAPES_CLASSES[18] == "bicycle"
    assert tuple(CITYSCAPES_PALETTE[0]) == (128, 64, 128)  # road
    assert tuple(CITYSCAPES_PALETTE[10]) == (70, 130, 180)  # sky
    assert tuple(CITYSCAPES_PALETTE[11]) == (220, 20, 60)  # person
    assert tuple(CITYSCAPES_PALETTE[13]) == (0, 0, 142)  # car
    assert tuple(CITYSCAPES_PALETTE[18]) == (119, 11, 32)  # bicycle


def test_colorize_semseg_exact_colours_and_black_ignore():
    labels = np.array([[0, 13, 255], [18, 19, -1]])
    rgb = colorize_semseg(labels)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 3, 3)
    np.testing.assert_array_equal(rgb, [[[128, 64, 128], [0, 0, 142], [0, 0, 0]],
                                        [[119, 11, 32], [0, 0, 0], [0, 0, 0]]])


def test_colorize_depth_inverse_depth_invalid_black_shared_range():
    depth = np.array([[2.0, 10.0, 0.0], [3.0, -1.0, np.nan]])
    rgb = colorize_depth(depth)  # range 2..10 m: 1/d maps 0.5 -> 1, 0.1 -> 0, 1/3 -> (1/3-0.1)/0.4 = 7/12
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 3, 3)
    assert tuple(rgb[0, 0]) == _plasma(1.0)
    assert tuple(rgb[0, 1]) == _plasma(0.0)
    assert tuple(rgb[1, 0]) == _plasma(7 / 12)
    for y, x in ((0, 2), (1, 1), (1, 2)):
        assert tuple(rgb[y, x]) == (0, 0, 0)
    # with a shared range, the same depth gets the same colour in two images
    other = np.array([[3.0, 40.0]])
    a, b = colorize_depth(depth, 2.0, 40.0), colorize_depth(other, 2.0, 40.0)
    assert tuple(a[1, 0]) == tuple(b[0, 0]) != tuple(b[0, 1])
    with pytest.raises(ValueError, match="vmin"):
        colorize_depth(depth, vmin=0.0, vmax=5.0)


def _grid_inputs(batch=3, height=6, width=8):
    rng = np.random.default_rng(0)
    images = np.full((batch, height, width, 3), 0.5, np.float32)
    pred_semseg = rng.integers(0, 19, size=(batch, height, width))
    gt_semseg = rng.integers(0, 19, size=(batch, height, width))
    gt_semseg[:, 0, 0] = 255
    gt_depth = rng.uniform(2, 50, size=(batch, height, width)).astype(np.float32)
    gt_depth[:, 1, 1] = 0.0
    pred_depth = rng.uniform(2, 50, size=(batch, height, width)).astype(np.float32)
    return images, pred_semseg, gt_semseg, pred_depth, gt_depth


def test_prediction_grid_layout_pixels_and_atomic_write(tmp_path):
    images, pred_semseg, gt_semseg, pred_depth, gt_depth = _grid_inputs()
    path = tmp_path / "new" / "folder" / "grid.png"
    save_prediction_grid(str(path), images, pred_semseg, gt_semseg, pred_depth, gt_depth, max_rows=2)
    assert os.listdir(path.parent) == ["grid.png"]
    with Image.open(path) as im:
        assert im.format == "PNG"
        grid = np.asarray(im.convert("RGB"))
    # 5 tiles of 8 px + 6 gaps of 4 px wide; 20 px titles + 2 rows of (6 px + 4 px gap) high
    assert grid.shape == (40, 64, 3)
    for row in range(2):
        y0 = 20 + row * 10
        x_input, x_pred, x_true, x_pdepth, x_tdepth = (4 + col * 12 for col in range(5))
        assert tuple(grid[y0 + 2, x_input + 3]) == (128, 128, 128)  # 0.5 -> 128
        for y, x in ((0, 0), (3, 5), (5, 7)):
            assert tuple(grid[y0 + y, x_pred + x]) == tuple(CITYSCAPES_PALETTE[pred_semseg[row, y, x]])
        assert tuple(grid[y0, x_true]) == (0, 0, 0)  # ignore label
        assert tuple(grid[y0 + 4, x_true + 2]) == tuple(CITYSCAPES_PALETTE[gt_semseg[row, 4, 2]])
        assert tuple(grid[y0 + 1, x_tdepth + 1]) == (0, 0, 0)  # invalid depth
        # the true-depth tile uses the ground truth's own range: its nearest pixel is the brightest colour
        y, x = np.unravel_index(np.argmin(np.where(gt_depth[row] > 0, gt_depth[row], np.inf)), gt_depth[row].shape)
        assert tuple(grid[y0 + y, x_tdepth + x]) == _plasma(1.0)
        assert tuple(grid[y0 + 2, x_pdepth + 2]) == tuple(colorize_depth(
            pred_depth[row], gt_depth[row][gt_depth[row] > 0].min(), gt_depth[row].max())[2, 2])
    # overwriting leaves one file, no temporaries
    save_prediction_grid(str(path), images, pred_semseg, gt_semseg, pred_depth, gt_depth, max_rows=4)
    assert os.listdir(path.parent) == ["grid.png"]
    with Image.open(path) as im:
        assert im.size == (64, 20 + 3 * 10)


def test_prediction_grid_shrinks_wide_tiles(tmp_path):
    inputs = _grid_inputs(batch=1, height=16, width=1024)
    path = tmp_path / "wide.png"
    save_prediction_grid(str(path), *inputs)
    with Image.open(path) as im:
        assert im.size == (5 * (512 + 4) + 4, 20 + 8 + 4)
        grid = np.asarray(im.convert("RGB"))
    # nearest resampling keeps exact palette colours in the segmentation tiles
    seg_tile = grid[20:28, 4 + 516:4 + 516 + 512].reshape(-1, 3)
    palette = {tuple(c) for c in CITYSCAPES_PALETTE}
    assert {tuple(c) for c in seg_tile} <= palette


def test_failed_write_keeps_old_file_and_leaves_no_temporaries(tmp_path, monkeypatch):
    path = tmp_path / "grid.png"
    path.write_bytes(b"old")

    def broken_save(self, fp, *args, **kwargs):
        with open(fp, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_prediction_grid(str(path), *_grid_inputs())
    assert os.listdir(tmp_path) == ["grid.png"]
    assert path.read_bytes() == b"old"


def _write_jsonl(path, rows, tail=""):
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
        f.write(tail)


def test_training_curves_png(tmp_path):
    rows = [{"step": s, "train/loss": 2.0 / s, "train/loss_semseg": 1.0 / s, "train/loss_depth": 1.0 / s,
             "train/grad_norm": 1.0, "time": 1e9 + s} for s in range(1, 21)]
    rows += [{"step": 10, "eval/total": 10.0, "eval/miou": 0.3, "eval/silog_rmse": 0.2},
             {"step": 20, "eval/total": 15.0, "eval/miou": 0.35}]  # a key missing from one row
    jsonl = tmp_path / "metrics.jsonl"
    _write_jsonl(jsonl, rows, tail='{"step": 21, "train/lo')  # a writer mid-append
    out = tmp_path / "plots" / "curves.png"
    plot_training_curves(str(jsonl), str(out))
    assert sorted(os.listdir(out.parent)) == ["curves.png"]
    with Image.open(out) as im:
        assert im.format == "PNG"
        # 4 panels (train losses, eval/total, eval/miou, eval/silog_rmse) -> 3 columns x 2 rows of 5 x 3.5 in
        assert im.size == (1500, 700)
    assert visualize._read_jsonl(str(jsonl))[-1]["step"] == 20


def test_training_curves_plain_keys_and_errors(tmp_path):
    jsonl = tmp_path / "metrics.jsonl"
    _write_jsonl(jsonl, [{"step": 1, "loss": 1.0, "lr": 0.1}, {"step": 2, "loss": 0.5, "lr": 0.05}])
    plot_training_curves(str(jsonl), str(tmp_path / "c.png"))
    with Image.open(tmp_path / "c.png") as im:
        assert im.size == (1000, 350)  # train losses + learning rate
    _write_jsonl(jsonl, [{"step": 1, "loss": 1.0}], tail="not json\n")
    with pytest.raises(ValueError, match="metrics.jsonl:2"):
        plot_training_curves(str(jsonl), str(tmp_path / "c.png"))
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        plot_training_curves(str(tmp_path / "missing.jsonl"), str(tmp_path / "c.png"))


def test_module_does_not_load_pyplot(tmp_path):
    jsonl = tmp_path / "m.jsonl"
    _write_jsonl(jsonl, [{"step": 1, "loss": 1.0}])
    code = ("import sys; from jaxvision import visualize; "
            f"visualize.plot_training_curves({str(jsonl)!r}, {str(tmp_path / 'c.png')!r}); "
            "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'")
    env = {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", "DISPLAY")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env,
                   cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
