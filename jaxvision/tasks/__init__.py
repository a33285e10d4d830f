"""Tasks tie a dataset's labels to losses, evaluation sums, metrics and pictures."""

from jaxvision.config import ConfigError
from jaxvision.tasks.segdepth import SegDepthTask

TASKS = {"segdepth": SegDepthTask}


def get_task(config):
    """The task object named by `config.task`."""
    if config.task not in TASKS:
        raise ConfigError(f"task '{config.task}' is unknown; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[config.task](config)
