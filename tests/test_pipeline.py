"""Transforms (flip, scale-crop, colour jitter) and the grain pipelines (resume, sharding, eval padding)."""

import itertools

import ml_collections
import numpy as np
import pytest

from jaxvision.data import pipeline, transforms
from jaxvision.data.synthetic import SyntheticScenes, render_scene

H, W = 32, 64


def data_config(**overrides) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict(dict(
        name="synthetic_scenes", height=H, width=W, num_train=12, num_val=10, num_classes=19,
        augment=ml_collections.ConfigDict(dict(flip=True, scale_range=(0.5, 1.5), color_jitter=0.3)),
        num_threads=2, prefetch=2))
    config.update(overrides)
    return config


@pytest.fixture(scope="module")
def example():
    return render_scene(0, 3, 64, 128)


# ---------------------------------------------------------------------------------------------- transforms


def test_flip_mirrors_every_array_and_twice_is_identity(example):
    flipped = transforms.hflip(example)
    for key in ("image", "semseg", "depth"):
        np.testing.assert_array_equal(flipped[key][:, 0], example[key][:, -1])
        np.testing.assert_array_equal(flipped[key][5, 17], example[key][5, 128 - 1 - 17])
    assert len(example["boxes"]) > 0
    x1, y1, x2, y2 = example["boxes"][0]
    np.testing.assert_array_equal(flipped["boxes"][0], [128 - x2, y1, 128 - x1, y2])
    np.testing.assert_allclose(flipped["lanes"][..., 0], 128 - example["lanes"][..., 0])
    twice = transforms.hflip(flipped)
    for key in ("image", "semseg", "depth"):
        np.testing.assert_array_equal(twice[key], example[key])
    for key in ("boxes", "lanes"):                          # float coordinates: W - (W - x) rounds
        np.testing.assert_allclose(twice[key], example[key], atol=1e-4)


def test_zoom_out_pads_with_ignore_and_samples_nearest(example):
    # Scale 0.5 centred in the 64 x 128 window: the 32 x 64 image sits at rows 16..48, cols 32..96.
    out = transforms.scale_crop(example, 0.5, top=-16, left=-32)
    assert out["image"].shape == (64, 128, 3) and out["semseg"].shape == (64, 128) and out["depth"].shape == (64, 128)
    pad = np.ones((64, 128), bool)
    pad[16:48, 32:96] = False
    assert (out["semseg"][pad] == 255).all() and (out["depth"][pad] == 0).all() and (out["image"][pad] == 0).all()
    # Nearest neighbour at half size samples source pixel 2i + 1 (pixel centres); depth divided by the scale.
    np.testing.assert_array_equal(out["semseg"][16:48, 32:96], example["semseg"][1::2, 1::2])
    np.testing.assert_allclose(out["depth"][16:48, 32:96], example["depth"][1::2, 1::2] / 0.5)
    # Boxes and lanes follow the same affine map.
    np.testing.assert_allclose(out["lanes"], example["lanes"] * 0.5 + [32, 16], atol=1e-4)


def test_zoom_in_crops_the_upsampled_labels(example):
    out = transforms.scale_crop(example, 2.0, top=10, left=30)
    upsampled = np.repeat(np.repeat(example["semseg"], 2, 0), 2, 1)
    np.testing.assert_array_equal(out["semseg"], upsampled[10:74, 30:158])
    depth_up = np.repeat(np.repeat(example["depth"], 2, 0), 2, 1)
    np.testing.assert_allclose(out["depth"], depth_up[10:74, 30:158] / 2.0)
    assert ((out["depth"] == 0) == (out["semseg"] == 10)).all()          # sky stays invalid
    # Boxes: x' = 2 x - 30, y' = 2 y - 10, clipped to the 128 x 64 window.
    expected = np.clip(example["boxes"] * 2 - [30, 10, 30, 10], 0, [128, 64, 128, 64])
    keep = (expected[:, 2] > expected[:, 0]) & (expected[:, 3] > expected[:, 1])
    assert keep.sum() >= 3
    np.testing.assert_allclose(out["boxes"], expected[keep])
    np.testing.assert_array_equal(out["box_classes"], example["box_classes"][keep])


def test_random_scale_crop_keeps_shapes_and_label_values(example):
    rng = np.random.default_rng(0)
    for _ in range(10):
        out = transforms.random_scale_crop(example, rng, (0.6, 1.6))
        assert out["image"].shape == example["image"].shape and out["semseg"].dtype == np.uint8
        assert set(np.unique(out["semseg"])) <= set(np.unique(example["semseg"])) | {255}
    assert transforms.random_scale_crop(example, rng, (1.0, 1.0)) is example
    with pytest.raises(ValueError, match="scale_range"):
        transforms.random_scale_crop(example, rng, (0.0, 1.0))


def test_color_jitter_hand_computed(example):
    image = example["image"]
    np.testing.assert_array_equal(transforms.color_jitter(example, 1.0, 1.0, 1.0)["image"], image)
    half = transforms.color_jitter(example, 0.5, 1.0, 1.0)["image"]
    np.testing.assert_array_equal(half, np.floor(image * 0.5 + 0.5).astype(np.uint8))
    grey = transforms.color_jitter(example, 1.0, 1.0, 0.0)["image"].astype(int)
    expected = np.floor(image.astype(np.float64) @ [0.299, 0.587, 0.114] + 0.5)
    assert np.abs(grey - expected[..., None]).max() <= 1
    flat = transforms.color_jitter(example, 1.0, 0.0, 1.0)["image"]     # contrast 0: the mean grey everywhere
    assert np.ptp(flat) == 0
    assert transforms.color_jitter(example, 1.0, 1.0, 1.0)["semseg"] is example["semseg"]


def test_augment_is_a_function_of_the_rng_and_model_inputs_are_typed(example):
    a = transforms.augment(example, np.random.default_rng(5), True, (0.5, 1.5), 0.3)
    b = transforms.augment(example, np.random.default_rng(5), True, (0.5, 1.5), 0.3)
    c = transforms.augment(example, np.random.default_rng(6), True, (0.5, 1.5), 0.3)
    np.testing.assert_array_equal(a["image"], b["image"])
    assert not np.array_equal(a["image"], c["image"])
    inputs = transforms.to_model_inputs(a)
    assert inputs.keys() == {"image", "semseg", "depth"}
    assert inputs["image"].dtype == np.float32 and 0 <= inputs["image"].min() and inputs["image"].max() <= 1
    assert inputs["semseg"].dtype == np.int32 and inputs["depth"].dtype == np.float32
    np.testing.assert_allclose(inputs["image"] * 255, a["image"], atol=1e-3)


# ---------------------------------------------------------------------------------------------- train stream


def take(iterator, n):
    return list(itertools.islice(iterator, n))


def assert_batches_equal(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.fixture(scope="module")
def reference_batches():
    """Batches 0..5 (global batch 4, one process) of a stream that wraps the 12-example epoch twice."""
    return take(pipeline.make_train_iterator(data_config(), 4, seed=7, process_index=0, process_count=1), 6)


def test_train_batches_have_the_agreed_layout(reference_batches):
    batch = reference_batches[0]
    assert batch["image"].shape == (4, H, W, 3) and batch["image"].dtype == np.float32
    assert batch["semseg"].shape == (4, H, W) and batch["semseg"].dtype == np.int32
    assert batch["depth"].shape == (4, H, W) and batch["depth"].dtype == np.float32


def test_resume_at_any_step_reproduces_the_stream(reference_batches):
    for start in (1, 4):
        resumed = take(pipeline.make_train_iterator(data_config(), 4, seed=7, start_step=start,
                                                    process_index=0, process_count=1), 2)
        for offset, batch in enumerate(resumed):
            assert_batches_equal(batch, reference_batches[start + offset])


def test_processes_split_each_global_batch(reference_batches):
    """Process p of n holds the p-th contiguous block of the global batch; concatenated, the global batch."""
    for count in (2, 4):
        shards = [take(pipeline.make_train_iterator(data_config(), 4, seed=7, start_step=1, process_index=p,
                                                    process_count=count), 3) for p in range(count)]
        for step in range(3):
            for p in range(count):
                block = 4 // count
                expected = {k: v[p * block:(p + 1) * block] for k, v in reference_batches[1 + step].items()}
                assert_batches_equal(shards[p][step], expected)


def test_thread_count_does_not_change_the_stream(reference_batches):
    serial = take(pipeline.make_train_iterator(data_config(num_threads=0), 4, seed=7, process_index=0,
                                               process_count=1), 2)
    for a, b in zip(serial, reference_batches):
        assert_batches_equal(a, b)


def test_each_epoch_is_a_fresh_permutation_of_the_source():
    config = data_config(augment=ml_collections.ConfigDict(dict(flip=False, scale_range=(1.0, 1.0), color_jitter=0.0)))
    batches = take(pipeline.make_train_iterator(config, 4, seed=3, process_index=0, process_count=1), 6)
    images = np.concatenate([b["image"] for b in batches])
    source = SyntheticScenes("train", 12, H, W)
    index = {transforms.to_model_inputs(source[i])["image"].tobytes(): i for i in range(12)}
    order = [index[image.tobytes()] for image in images]
    assert sorted(order[:12]) == sorted(order[12:]) == list(range(12))
    assert order[:12] != order[12:] and order[:12] != list(range(12))


def test_augmentation_is_applied_per_position(reference_batches):
    """The same source example at two positions of the stream is augmented differently."""
    config = data_config(augment=ml_collections.ConfigDict(dict(flip=False, scale_range=(1.0, 1.0), color_jitter=0.0)))
    plain = np.concatenate([b["semseg"] for b in take(pipeline.make_train_iterator(
        config, 4, seed=7, process_index=0, process_count=1), 6)])
    augmented = np.concatenate([b["semseg"] for b in reference_batches])
    assert not np.array_equal(plain, augmented)            # same order (shuffle seed), different geometry
    assert (augmented == 255).any()                         # some zoom-outs padded with ignore


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="multiple of the process count"):
        pipeline.make_train_iterator(data_config(), 6, seed=0, process_index=0, process_count=4)
    with pytest.raises(ValueError, match="synthetic_scenes"):
        pipeline.get_source(data_config(name="no_such_dataset"), "train")
    with pytest.raises(ValueError, match="'test'"):
        pipeline.get_source(data_config(), "test")


# ---------------------------------------------------------------------------------------------- eval


def test_eval_pass_is_padded_and_masked():
    config = data_config()
    assert pipeline.num_eval_examples(config) == 10
    batches = list(pipeline.make_eval_iterator(config, 4, process_index=0, process_count=1))
    assert len(batches) == 3
    assert batches[0]["mask"].shape == (4,) and batches[0]["mask"].dtype == np.float32
    masks = np.concatenate([b["mask"] for b in batches])
    np.testing.assert_array_equal(masks, [1] * 10 + [0] * 2)
    last = batches[-1]
    assert (last["semseg"][2:] == 255).all() and (last["depth"][2:] == 0).all() and (last["image"][2:] == 0).all()
    source = SyntheticScenes("val", 10, H, W)
    for i in (0, 9):                                        # unaugmented, in order
        expected = transforms.to_model_inputs(source[i])
        for key in expected:
            np.testing.assert_array_equal(batches[i // 4][key][i % 4], expected[key])


def test_eval_shards_cover_the_split_once():
    config = data_config()
    shards = [list(pipeline.make_eval_iterator(config, 4, process_index=p, process_count=2)) for p in range(2)]
    assert len(shards[0]) == len(shards[1]) == 3
    assert sum(float(b["mask"].sum()) for shard in shards for b in shard) == 10
    single = list(pipeline.make_eval_iterator(config, 4, process_index=0, process_count=1))
    for step in range(3):
        for p in range(2):
            np.testing.assert_array_equal(shards[p][step]["image"], single[step]["image"][2 * p:2 * p + 2])
