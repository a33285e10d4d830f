"""CERBERUS MobileNetV2-BiFPN on BDD100K: the thesis recipe (seed 000, sections 3.4.1-3.4.3, Table 3.2).

640 x 320 inputs (1280 x 720 scaled by 0.5, centre-cropped), output stride 4; 10 object classes, 8 lane classes,
weather / scene / time-of-day tags. Adam, linear warm-up to 2.5e-4 over 3,500 steps, halved after 100K steps,
batch 64, 160K steps; heatmap loss Eq. 3.5 (alpha 4, beta 2), L1 offsets, BCE occlusion, tags x 0.1.

    jaxvision train --config configs/adas/mbv2_bifpn.py --workdir runs/cerberus_mbv2 --config.data.root=/data/bdd100k

The other configurations of Table 3.2 are the sibling files (rn34_simple.py, rn34_bifpn.py, rn50_bifpn.py,
rn101_bifpn.py, effb2_bifpn.py); synthetic.py / synthetic_cpu.py train this model on the built-in driving scenes.
"""

import ml_collections

from jaxvision.data import bdd100k


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.task = "adas"
    tags = (("weather", len(bdd100k.WEATHERS)), ("scene", len(bdd100k.SCENES)),
            ("time_of_day", len(bdd100k.TIMES_OF_DAY)))
    config.model = ml_collections.ConfigDict(dict(
        name="cerberus", backbone="mobilenet_v2", neck="bifpn", neck_channels=64, head_channels=64, bifpn_repeats=3,
        num_classes=len(bdd100k.DETECTION_CLASSES),
        num_lane_classes=len(bdd100k.LANE_CLASSES), tags=tags, norm="batch"))

    config.data = ml_collections.ConfigDict(dict(
        name="bdd100k",            # bdd100k | synthetic_scenes
        root="",                   # BDD100K folder (images/100k/{train,val}, labels/)
        height=320,
        width=640,
        scale=0.5,                 # bdd100k: 1280 x 720 -> 640 x 360, then the central 640 x 320
        num_train=50_000,          # synthetic_scenes only
        num_val=500,
        adas=ml_collections.ConfigDict(dict(
            num_classes=len(bdd100k.DETECTION_CLASSES), class_names=bdd100k.DETECTION_CLASSES,
            num_lane_classes=len(bdd100k.LANE_CLASSES),
            tags=tuple(name for name, _ in tags),
            tag_names=(bdd100k.WEATHERS, bdd100k.SCENES, bdd100k.TIMES_OF_DAY),
            stride=4,
            det_sigma=0.0,         # 0: size-adaptive Gaussians (CornerNet radius); > 0: fixed, in output cells
            lane_sigma=2.0,        # fixed for lane keypoints (section 3.4.1)
            lane_step=1.0,         # keypoint spacing along a lane, output cells
            max_objects=128,       # encoded object centres per image
            max_lane_points=1024,  # encoded lane keypoints per image
            max_boxes=128,         # ground truth kept for evaluation
            max_lanes=32,
            lane_points=32)),
        augment=ml_collections.ConfigDict(dict(flip=True, scale_range=(0.8, 1.25), color_jitter=0.3)),
        num_threads=4,
        prefetch=4,
    ))

    config.loss = ml_collections.ConfigDict(dict(
        weights=ml_collections.ConfigDict(dict(heatmap=1.0, box_offsets=1.0, occlusion=1.0, lane_heatmap=1.0,
                                               lane_offsets=1.0, tags=0.1))))

    config.optimizer = ml_collections.ConfigDict(dict(
        name="adam", lr=2.5e-4, momentum=0.9, nesterov=False, b1=0.9, b2=0.999, eps=1e-8,
        weight_decay=0.0, weight_decay_mask="kernels", clip_grad_norm=0.0))
    config.schedule = ml_collections.ConfigDict(dict(
        name="step", warmup_steps=3500, step_every=100_000, decay_factor=0.5, power=0.9, end_lr_fraction=0.0))
    config.swa = ml_collections.ConfigDict(dict(enabled=False))

    config.train = ml_collections.ConfigDict(dict(
        batch_size=64, num_steps=160_000, grad_accum_steps=1, compute_dtype="float32",
        log_every=100, eval_every=10_000, checkpoint_every=2_000, keep_checkpoints=3,
        best_metric="map", best_mode="max"))
    config.eval = ml_collections.ConfigDict(dict(
        batch_size=32, num_grid_images=4,
        score_threshold=0.25,      # detections below are dropped before AP (section 3.4.3)
        top_k=100,                 # object peaks decoded per image
        lane_top_k=512,            # lane keypoints decoded per image
        lane_threshold=0.5,        # lane keypoint heat threshold (half a peak; BENCHMARKS.md has a sweep)
        lane_cluster_distance=12.0))  # pixels between midpoint votes of one lane
    return config
