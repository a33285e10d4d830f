"""The small driver-monitoring model trained on a 2-core CPU in under 20 minutes, on synthetic faces.

configs/dms/small.py's model (704,729 parameters) at 48 x 48 instead of 160 x 160 (about 11x fewer MACs):
on the CPU a 48-pixel step learns about as much per image as a 64-pixel one at 1.85x the images per second
(BENCHMARKS.md). Batch 16 with Adam 6e-3 and a cosine decay over 10,500 steps (168,000 faces, about 19 min at
150 img/s on a 2-core AMD EPYC VM): at this budget more, smaller steps beat fewer, larger ones, and 6e-3 beat
3e-3 and 1.5e-3 in 2,000-step trials. Task weights as small.py (landmarks 0.005, head pose 20: weighting the
landmark term 10x higher left eyes, mouth and distraction at their priors; BENCHMARKS.md).

    jaxvision train --config configs/dms/small_cpu.py --workdir runs/dms_small_cpu
"""

import os

from jaxvision.config import load_config_file


def get_config():
    config = load_config_file(os.path.join(os.path.dirname(__file__), "small.py"))
    config.data.height = config.data.width = 48
    config.data.num_val = 1000
    config.optimizer.lr = 6e-3
    config.schedule.update(name="cosine", warmup_steps=100, end_lr_fraction=0.01)
    config.train.update(batch_size=16, num_steps=10_500, log_every=100, eval_every=5250, checkpoint_every=500)
    config.eval.batch_size = 100
    return config
