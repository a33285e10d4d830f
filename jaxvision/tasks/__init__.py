"""Tasks tie a dataset's labels to losses, evaluation sums, metrics and pictures.

A task has `loss`, `eval_sums`, `finalize`, `format`, `save_predictions`, `main_metrics` and
`init_loss_params`; a task whose model does not take the batch's 'image' also declares `input_keys`
(the batch entries passed to the model, in order) and `init_inputs(config)` (arrays of one example to
initialise it with) - see `model_input_keys` / `model_init_inputs`.
"""

from jaxvision.config import ConfigError
from jaxvision.tasks.adas import ADASTask
from jaxvision.tasks.dms import DMSTask
from jaxvision.tasks.mlm import MLMTask
from jaxvision.tasks.segdepth import SegDepthTask
from jaxvision.tasks.text_classification import TextClassificationTask

TASKS = {"segdepth": SegDepthTask, "dms": DMSTask, "adas": ADASTask, "mlm": MLMTask, "text_classification": TextClassificationTask}
IMAGE_INPUTS = ("image",)


def get_task(config):
    """The task object named by `config.task`."""
    if config.task not in TASKS:
        raise ConfigError(f"task '{config.task}' is unknown; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[config.task](config)


def model_input_keys(task) -> tuple[str, ...]:
    """The batch entries the task's model is applied to: `task.input_keys`, by default ('image',)."""
    return getattr(task, "input_keys", IMAGE_INPUTS)


def model_init_inputs(task, config) -> tuple:
    """What `create_train_state` initialises the model on: `task.init_inputs(config)` (arrays of one example),
    by default the image shape (1, data.height, data.width, 3)."""
    if hasattr(task, "init_inputs"):
        return tuple(task.init_inputs(config))
    return (1, config.data.height, config.data.width, 3)
