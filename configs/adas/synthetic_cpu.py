"""CERBERUS MobileNetV2-BiFPN on synthetic driving scenes, sized for a 2-core CPU (BENCHMARKS.md, ADAS entry).

configs/adas/synthetic.py at 128 x 256 (6.25x fewer pixels than 640 x 320; output maps 32 x 64) with batch 16,
Adam 1e-3 after a short warm-up and a cosine decay (the thesis' 3,500 warm-up steps alone exceed this budget);
3,000 steps (48,000 images): 50 minutes at 16 images/s on a 2-core AMD EPYC VM with AVX-512, about two
hours on the slower 2-core VM of the earlier runs (6.8 images/s); BENCHMARKS.md has the scores.

    jaxvision train --config configs/adas/synthetic_cpu.py --workdir runs/cerberus_cpu
"""

import os

from jaxvision.config import load_config_file


def get_config():
    config = load_config_file(os.path.join(os.path.dirname(__file__), "synthetic.py"))
    config.data.height, config.data.width = 128, 256
    config.data.num_val = 200
    config.data.num_threads = 2
    config.optimizer.lr = 1e-3
    config.schedule.update(name="cosine", warmup_steps=50, end_lr_fraction=0.01)
    config.train.update(batch_size=16, num_steps=3000, log_every=25, eval_every=1500, checkpoint_every=100)
    config.eval.update(batch_size=50, lane_cluster_distance=6.0)
    return config
