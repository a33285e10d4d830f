"""DeepLabv3+ for joint semantic segmentation + depth (seeds 002/003, Problem 1).

ResNet-34 encoder with output stride 16 through dilation, ASPP (1x1, atrous 3x3 at rates 6/12/18,
image pooling, 256 channels), decoder with the stride-4 skip (48 channels) and two 3x3 convs, one
shared decoder and a 1x1 output per task; cross-entropy + SI-log with weights w / 1 - w.
Defaults: the reports' best joint setting (Adam 1e-4, batch 8, w = 0.5), trained on the built-in
synthetic driving scenes. Override any field: --config.model.encoder=resnet50.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.task = "segdepth"

    config.model = ml_collections.ConfigDict(dict(
        name="deeplabv3plus",
        encoder="resnet34",
        output_stride=16,
        aspp_rates=(6, 12, 18),
        aspp_channels=256,
        use_aspp=True,           # False: a 1x1 conv instead of ASPP (the reports' ablation)
        skip_channels=48,
        decoder_channels=256,
        tasks=(("semseg", 19), ("depth", 1)),
        norm="batch",
        encoder_weights="",  # a `jaxvision convert-weights` dir of model.encoder to start from ('' = random init)
    ))

    config.data = ml_collections.ConfigDict(dict(
        name="synthetic_scenes",  # synthetic_scenes | cityscapes | miniscapes | nyu_depth_v2
        root="",                  # dataset folder of the on-disk datasets
        height=256,
        width=512,
        num_train=20000,          # synthetic_scenes only (on-disk datasets use all their images)
        num_val=500,
        num_classes=19,
        augment=ml_collections.ConfigDict(dict(flip=True, scale_range=(0.75, 1.25), color_jitter=0.2)),
        num_threads=2,
        prefetch=4,
    ))

    config.loss = ml_collections.ConfigDict(dict(
        weighting="fixed",      # fixed: semseg_weight * CE + depth_weight * depth | uncertainty (Kendall et al.)
        semseg_weight=0.5,      # the reports' 1 - w (fixed weighting only)
        depth_weight=0.5,       # the reports' w (fixed weighting only)
        depth_loss="silog",     # silog | l1 | l2 | berhu  (jaxvision/losses.py)
        silog_lambda=0.85,      # sqrt(Var(e) + silog_lambda * Mean(e)^2), e = log depth error
        silog_reduction="image",  # image: per-image Var/Mean, averaged | batch: over the whole batch (seed 003)
        berhu_threshold=0.2,    # berHu c = berhu_threshold * max |residual| in the batch (Laina et al.)
    ))

    config.optimizer = ml_collections.ConfigDict(dict(
        name="adam",            # sgd | adam | adamw
        lr=1e-4,
        momentum=0.9,           # sgd
        nesterov=False,         # sgd
        b1=0.9, b2=0.999, eps=1e-8,
        weight_decay=0.0,       # coupled L2 for sgd/adam, decoupled for adamw
        weight_decay_mask="kernels",  # kernels (no bias/norm) | all
        clip_grad_norm=0.0,     # 0 = off
    ))
    config.schedule = ml_collections.ConfigDict(dict(
        name="constant",        # constant | poly | warmup_linear | step | cosine
        warmup_steps=0,
        power=0.9,              # poly
        step_every=10000,       # step: multiply by decay_factor every step_every steps
        decay_factor=0.5,
        end_lr_fraction=0.0,    # poly / warmup_linear / cosine end value as a fraction of lr
    ))

    config.train = ml_collections.ConfigDict(dict(
        batch_size=8,           # global batch over all devices and hosts
        num_steps=40000,
        grad_accum_steps=1,     # micro-batches per step (the batch is split, gradients averaged)
        compute_dtype="float32",  # float32 | bfloat16
        log_every=50,
        eval_every=2000,
        checkpoint_every=1000,
        keep_checkpoints=3,
        best_metric="total",    # an eval metric name
        best_mode="max",
    ))
    config.eval = ml_collections.ConfigDict(dict(batch_size=8, num_grid_images=4))
    return config
