"""Synthetic DMS faces: determinism, label formats, geometry conventions, label consistency with the drawing."""

import dataclasses

import numpy as np
import pytest

from jaxvision.data import face_labels, face_roi
from jaxvision.data import face_landmarks as fl
from jaxvision.data import synthetic_faces as sf
from jaxvision.data.synthetic_faces import SyntheticFaces, mirror_face, project_landmarks, render_face, sample_face

EYE_POINTS = (list(fl.LEFT_EYE) + [fl.LEFT_PUPIL], list(fl.RIGHT_EYE) + [fl.RIGHT_PUPIL])


def faces(n, start=0, **kw):
    """Sampled params of examples start..start+n of the train split."""
    ds = SyntheticFaces("train", start + n, **kw)
    return [ds.params(i) for i in range(start, start + n)]


def quiet(params, **props):
    """`params` without sensor noise (and with `props` replaced), for pixel comparisons."""
    return dataclasses.replace(params, look=dataclasses.replace(params.look, noise=0.0),
                               props=dataclasses.replace(params.props, **props))


def pixels(example, idx):
    """Image values [len(idx), 3] at the pixels holding landmarks `idx`."""
    size = example["image"].shape[0]
    px = np.clip((example["landmarks"][idx] * size).astype(int), 0, size - 1)
    return example["image"][px[:, 1], px[:, 0]]


def test_same_index_gives_identical_examples_and_splits_differ():
    a, b = SyntheticFaces("train", 8, size=64)[5], SyntheticFaces("train", 8, size=64)[5]
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    val = SyntheticFaces("val", 8, size=64)[5]
    assert not np.allclose(a["landmarks"], val["landmarks"]) and not np.allclose(a["image"], val["image"])
    assert not np.allclose(a["landmarks"], SyntheticFaces("train", 8, size=64, seed=1)[5]["landmarks"])


@pytest.mark.parametrize("size", [48, 97, 160])
def test_arrays_have_the_documented_shapes_dtypes_and_ranges(size):
    ds = SyntheticFaces("val", 6, size=size)
    assert len(ds) == 6
    for i in range(len(ds)):
        ex = ds[i]
        assert ex["image"].shape == (size, size, 3) and ex["image"].dtype == np.float32
        assert 0.0 <= ex["image"].min() and ex["image"].max() <= 1.0 and ex["image"].std() > 0.05
        assert ex["landmarks"].shape == (98, 2) and ex["landmarks"].dtype == np.float32
        assert ex["landmarks"].min() >= 0.0 and ex["landmarks"].max() <= 1.0
        # Validation RoIs are the landmark box made square about its centre (Table 2.2's test column).
        np.testing.assert_allclose(np.ptp(ex["landmarks"], 0).max(), 1.0, atol=1e-5)
        np.testing.assert_allclose((ex["landmarks"].min(0) + ex["landmarks"].max(0)) / 2, 0.5, atol=1e-5)
        assert ex["eyes"].shape == (4,) and ex["eyes"].dtype == np.float32 and set(ex["eyes"]) <= {0.0, 1.0}
        assert (ex["eyes"][[1, 3]] <= ex["eyes"][[0, 2]]).all()                  # open implies visible
        assert ex["mouth"].dtype == np.int32 and ex["mouth"] in (0, 1, 2)
        assert ex["distraction"].dtype == np.int32 and ex["distraction"] in (0, 1, 2)
        assert ex["head_pose"].shape == (3,) and ex["head_pose"].dtype == np.float32
        assert (np.abs(ex["head_pose"]) <= np.deg2rad([sf.YAW_DEG, sf.PITCH_DEG, sf.ROLL_DEG]) + 1e-6).all()
        assert ex["confidence"].dtype == np.float32 and ex["confidence"] == 1.0
    with pytest.raises(IndexError):
        ds[6]


def test_training_rois_follow_table_2_2_scale_and_shift():
    ds = SyntheticFaces("train", 40, size=48)
    faces = [ds.params(i) for i in range(len(ds))]
    scales = np.array([f.roi_scale for f in faces])
    shifts = np.array([f.roi_shift for f in faces])
    assert 1.0 <= scales.min() and scales.max() <= 1.1 and np.ptp(scales) > 0.05
    assert 0.0 <= shifts.min() and shifts.max() <= 1.0 and np.ptp(shifts) > 0.8
    for face in faces[:5]:
        points = project_landmarks(face)
        assert points.min() >= -1e-6 and points.max() <= 1 + 1e-6
        np.testing.assert_allclose(np.ptp(points, 0).max(), 1 / face.roi_scale, rtol=1e-5)
    # Uniform draws u -> fraction of the slack: TRAIN moves the centre by U[0, 1] of the slack either way.
    u = np.array([0.0, 0.25, 0.5, 1.0])
    np.testing.assert_allclose(sf._roi_shift(u, face_roi.TRAIN), [0.0, 0.25, 0.5, 1.0])
    np.testing.assert_allclose(sf._roi_shift(u, face_roi.EVAL), 0.5)
    np.testing.assert_allclose(sf._roi_shift(u, face_roi.RoIAugment(shift=(0.5, 1.0))), [0.0, 0.125, 0.5, 1.0])


def test_face_is_sampled_before_the_resolution():
    small, large = SyntheticFaces("train", 4, size=48)[3], SyntheticFaces("train", 4, size=144)[3]
    for key in ("landmarks", "eyes", "mouth", "head_pose", "distraction"):
        np.testing.assert_array_equal(small[key], large[key], err_msg=key)
    # Same picture up to resolution and sensor noise: the 144 px image box-averaged to 48 px is the 48 px one
    # (another face differs by ~0.2).
    coarse = large["image"].reshape(48, 3, 48, 3, 3).mean((1, 3))
    assert np.abs(coarse - small["image"]).mean() < 0.04


def test_mirrored_face_has_the_flipped_landmarks_and_labels():
    for params in faces(60):
        ex, mirrored = render_face(params, 64), render_face(mirror_face(params), 64)
        np.testing.assert_allclose(mirrored["landmarks"], fl.flip_landmarks(ex["landmarks"]), atol=1e-4)
        np.testing.assert_allclose(mirrored["head_pose"], fl.flip_pose(ex["head_pose"]), atol=1e-6)
        np.testing.assert_array_equal(mirrored["eyes"], ex["eyes"][fl.EYE_FLIP_PERMUTATION])
        assert mirrored["mouth"] == ex["mouth"] and mirrored["distraction"] == ex["distraction"]


def on_axis(params, **pose):
    """`params` with the head on the optical axis and the given yaw / pitch / roll."""
    translation = np.array([0.0, 0.0, params.translation[2]])
    return dataclasses.replace(params, translation=translation, **pose)


def test_roll_rotates_the_landmarks_clockwise_as_in_face_landmarks():
    # With the head on the optical axis, roll turns the whole projection about the principal point; the crop
    # only translates and scales it, so the landmarks must be a similarity of each other with angle = roll.
    for params in faces(10):
        base = project_landmarks(on_axis(params, roll=0.0)).astype(np.float64)
        for roll in (-0.5, 0.3):
            rolled = project_landmarks(on_axis(params, roll=roll)).astype(np.float64)
            turned = fl.rotate_points(base - base.mean(0), roll, (0.0, 0.0)).astype(np.float64)
            target = rolled - rolled.mean(0)
            scale = (turned * target).sum() / (turned ** 2).sum()
            assert np.abs(scale * turned - target).max() < 2e-4


def test_yaw_and_pitch_move_the_nose_as_the_convention_says():
    # R = Rz Ry Rx, OpenCV axes, face looking along -z: positive yaw turns the nose tip (54) to image-left of
    # the eye centres, positive pitch moves it down (the face looks down).
    def nose_offset(params):
        lm = project_landmarks(params)
        eyes = lm[[60, 64, 68, 72]].mean(0)
        return (lm[54] - eyes) / np.ptp(lm, 0).max()

    for params in faces(10):
        straight = nose_offset(on_axis(params, yaw=0.0, pitch=0.0, roll=0.0))
        assert nose_offset(on_axis(params, yaw=0.5, pitch=0.0, roll=0.0))[0] < straight[0] - 0.05
        assert nose_offset(on_axis(params, yaw=-0.5, pitch=0.0, roll=0.0))[0] > straight[0] + 0.05
        assert nose_offset(on_axis(params, yaw=0.0, pitch=0.4, roll=0.0))[1] > straight[1] + 0.03
        assert nose_offset(on_axis(params, yaw=0.0, pitch=-0.4, roll=0.0))[1] < straight[1] - 0.03


def test_eye_and_mouth_labels_agree_with_the_landmark_aspect_ratios():
    ears, eyes, mars, mouths = [], [], [], []
    for params in faces(200):
        lm = project_landmarks(params)
        labels = sf.labels(params, lm)
        ears.append(fl.eye_aspect_ratios(lm))
        eyes.append(labels["eyes"].reshape(2, 2))
        mars.append(fl.mouth_aspect_ratio(lm))
        mouths.append(labels["mouth"])
    ears, eyes, mars, mouths = map(np.array, (ears, eyes, mars, mouths))
    visible, opened = eyes[..., 0] == 1, eyes[..., 1] == 1
    np.testing.assert_array_equal(opened, visible & (ears > sf.EYE_OPEN_EAR))
    # Far from the threshold on both sides: open eyes render EAR >= 0.19, closed ones <= 0.06.
    assert ears[opened].min() > 0.19 and ears[visible & ~opened].max() < 0.06
    assert opened.sum() > 150 and (visible & ~opened).sum() > 50
    np.testing.assert_array_equal(mouths, np.digitize(mars, [face_labels.MOUTH_SEMI_MAR, face_labels.MOUTH_OPEN_MAR]))
    for threshold in (face_labels.MOUTH_SEMI_MAR, face_labels.MOUTH_OPEN_MAR):
        assert np.abs(mars - threshold).min() > 0.04


def test_label_balance_follows_the_sampling_probabilities():
    ds = SyntheticFaces("train", 500, size=48)
    params = [ds.params(i) for i in range(500)]
    mouths = np.array([sf.labels(p, project_landmarks(p))["mouth"] for p in params])
    assert (np.bincount(mouths, minlength=3) / 500 >= 0.15).all()
    freq = np.bincount([p.props.distraction for p in params], minlength=3) / 500
    np.testing.assert_allclose(freq, sf.DEFAULT_CLASS_PROBS, atol=0.06)
    only_smoking = SyntheticFaces("val", 20, size=48, class_probs=(0.0, 0.0, 1.0))
    assert all(only_smoking.params(i).props.distraction == 2 for i in range(20))


def test_sunglasses_hide_both_eyes():
    for params in faces(12):
        ex = render_face(quiet(params, glasses=2, glasses_color=np.full(3, 0.1), occluded_eye=-1), 128)
        np.testing.assert_array_equal(ex["eyes"], np.zeros(4))
        for idx in EYE_POINTS:
            assert pixels(ex, idx).mean(-1).max() < 0.3                     # every eye landmark is under a lens


def test_eye_occluder_covers_exactly_one_eye():
    checked = 0
    for params in faces(400):
        if params.props.occluded_eye < 0:
            continue
        e = params.props.occluded_eye
        ex = render_face(quiet(params), 96)
        assert ex["eyes"][2 * e] == ex["eyes"][2 * e + 1] == 0
        green, magenta = np.array([0.0, 1.0, 0.0]), np.array([1.0, 0.0, 1.0])
        a = render_face(quiet(params, occluder_color=green, hand_color=green), 96)
        b = render_face(quiet(params, occluder_color=magenta, hand_color=magenta), 96)
        bare = render_face(quiet(params, occluded_eye=-1), 96)
        assert (np.abs(pixels(a, EYE_POINTS[e]) - pixels(b, EYE_POINTS[e])).max(-1) > 0.1).all()
        np.testing.assert_allclose(pixels(ex, EYE_POINTS[1 - e]), pixels(bare, EYE_POINTS[1 - e]), atol=0.02)
        checked += 1
    assert checked >= 10


def test_phones_cigarettes_and_hands_leave_the_eyes_and_inner_lips_uncovered():
    checked = 0
    for params in faces(150):
        if not params.props.distraction and not params.props.hand:
            continue
        ex = render_face(quiet(params), 96)
        bare = render_face(quiet(params, distraction=0, hand=False), 96)
        assert not np.array_equal(ex["image"], bare["image"])                 # the prop is in the picture
        kept = EYE_POINTS[0] + EYE_POINTS[1] + ([] if params.props.distraction == 2 else list(fl.INNER_LIP))
        np.testing.assert_allclose(pixels(ex, kept), pixels(bare, kept), atol=0.02)
        checked += 1
    assert checked >= 50


def test_closing_the_eyes_changes_the_eye_pixels_only():
    params = on_axis(quiet(faces(1, start=3)[0], glasses=0, occluded_eye=-1, distraction=0, hand=False),
                     yaw=0.1, pitch=0.0, roll=0.0)
    opened = render_face(dataclasses.replace(params, eye_opening=np.array([10.0, 10.0])), 160)
    closed = render_face(dataclasses.replace(params, eye_opening=np.array([0.0, 0.0])), 160)
    np.testing.assert_array_equal(opened["eyes"], [1, 1, 1, 1])
    np.testing.assert_array_equal(closed["eyes"], [1, 0, 1, 0])
    diff = np.abs(opened["image"] - closed["image"]).max(-1)
    for idx in EYE_POINTS:
        (x0, y0), (x1, y1) = (opened["landmarks"][idx].min(0) * 160).astype(int), \
            (opened["landmarks"][idx].max(0) * 160).astype(int) + 1
        assert diff[y0:y1, x0:x1].mean() > 0.08                               # sclera and iris vs lids
    mouth = (opened["landmarks"][list(fl.OUTER_LIP)] * 160).astype(int)
    assert diff[mouth[:, 1].min() - 2:, :].max() == 0                         # nothing changes below the eyes
    # The landmarks sit on what is drawn for them: black pupils under 96 / 97, white between them and the
    # outer corners.
    assert pixels(opened, [96, 97]).max() < 0.1
    between = (opened["landmarks"][[60, 72]] + opened["landmarks"][[96, 97]]) / 2
    px = (between * 160).astype(int)
    assert opened["image"][px[:, 1], px[:, 0]].min() > 0.4


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="size"):
        SyntheticFaces("train", 4, size=32)
    with pytest.raises(ValueError, match="split"):
        SyntheticFaces("test", 4)
    with pytest.raises(ValueError, match="class_probs"):
        SyntheticFaces("train", 4, class_probs=(0.5, 0.5))
    with pytest.raises(ValueError, match="num"):
        SyntheticFaces("train", 0)
    with pytest.raises(ValueError, match="size"):
        render_face(sample_face(np.random.default_rng(0)), 40)
