"""Driver-monitoring face model, small size (seed 000, ch. 2; Table 2.6's 705,422-parameter model).

160 x 160 face crops -> 98 landmarks, eyes, mouth, head pose and distraction in one pass. Defaults follow the
thesis' "Lm+All" runs of Tables 2.4 / 2.6: Adam at a fixed 2e-4, Wing loss for the landmarks, batch 128,
300 epochs (of LaPa's 18,176 training images, 142 steps each). Trains on the built-in synthetic faces; for LaPa:

    jaxvision train --config configs/dms/small.py --workdir runs/dms_small \\
        --config.data.name=lapa --config.data.root=/data/LaPa

The release configuration (section 2.4.3): --config.optimizer.name=sgd --config.optimizer.lr=4e-4
--config.schedule.name=swa --config.swa.enabled=True --config.loss.distraction=focal (W1 class weights).
"""

import ml_collections

STEPS_PER_EPOCH = -(-18_176 // 128)


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.task = "dms"
    # landmark_init: the landmark biases of the head start at the crop centre (0 starts them at the corner).
    # pool: how the head pools the stride-4/8/16 maps: "mean" (the thesis) | "soft_argmax" (small_cpu.py).
    # refine: strides of the maps a landmark refinement step samples (none: the thesis' head alone).
    config.model = ml_collections.ConfigDict(dict(name="dms", size="small", norm="batch", landmark_init=0.5,
                                                  pool="mean", refine=()))

    config.data = ml_collections.ConfigDict(dict(
        name="synthetic_faces",   # synthetic_faces | lapa
        root="",                  # LaPa folder ({train,val,test}/{images,landmarks,labels})
        height=160,
        width=160,
        num_train=100_000,        # synthetic_faces only
        num_val=1000,
        class_probs=(0.6, 0.2, 0.2),  # synthetic_faces: normal / phone / smoking
        copies=10,                # lapa: precomputed-style augmented crops per training image (Table 2.2)
        distraction_root="",      # phone / smoking images ({root}/{phone,smoking}/, keypoints.json), with ...
        pseudo_labels="",         # ... their labels from `jaxvision pseudo-label`: added to the training split
        seed=0,                   # the faces / augmented crops drawn
        augment=ml_collections.ConfigDict(dict(photometric=True)),
        num_threads=2,
        prefetch=4,
    ))

    config.loss = ml_collections.ConfigDict(dict(
        # alpha_i of Eq. 2.13; 0 leaves a task out. The landmark term is a sum of Wing over 196 pixel coordinates:
        # weighted higher, its gradients swamp the other tasks' in the shared layers (BENCHMARKS.md, issue 7).
        weights=ml_collections.ConfigDict(dict(landmarks=0.005, eyes=1.0, mouth=1.0, head_pose=20.0,
                                               distraction=1.0)),
        landmark="wing",          # l1 | l2 | smooth_l1 | wing | rectified_wing
        wing_w=10.0,              # pixels
        wing_eps=2.0,
        distraction="ce",         # ce | focal
        focal_gamma=2.0,
        distraction_class_weights=(1.0, 1.0, 1.0),  # W1 of the release: (1.0, 0.5, 0.5)
    ))

    config.optimizer = ml_collections.ConfigDict(dict(
        name="adam", lr=2e-4, momentum=0.9, nesterov=False, b1=0.9, b2=0.999, eps=1e-8,
        weight_decay=0.0, weight_decay_mask="kernels", clip_grad_norm=0.0))
    config.schedule = ml_collections.ConfigDict(dict(
        name="constant", warmup_steps=0, power=0.9, step_every=10000, decay_factor=0.5,
        end_lr_fraction=0.5,                        # swa: the final lr 2e-4 = 0.5 x 4e-4
        swa_start_step=250 * STEPS_PER_EPOCH,       # swa: lr decay starts at epoch 250 ...
        swa_decay_steps=10 * STEPS_PER_EPOCH))      # ... and lasts 10 epochs
    config.swa = ml_collections.ConfigDict(dict(
        enabled=False,
        start_step=251 * STEPS_PER_EPOCH,  # first snapshot at the end of epoch 251, then one per epoch
        every=STEPS_PER_EPOCH,
        bn_batches=50,                     # training batches to recompute BatchNorm statistics with
    ))

    config.train = ml_collections.ConfigDict(dict(
        batch_size=128, num_steps=300 * STEPS_PER_EPOCH, grad_accum_steps=1, compute_dtype="float32",
        log_every=50, eval_every=10 * STEPS_PER_EPOCH, checkpoint_every=STEPS_PER_EPOCH, keep_checkpoints=3,
        best_metric="nme", best_mode="min"))
    config.eval = ml_collections.ConfigDict(dict(batch_size=128, num_grid_images=4))
    return config
