"""Whole networks, registered by name: `create("resnet50", num_classes=10)`, `create_from_config(config.model)`."""

from jaxvision.models.registry import create, create_from_config, list_models, model_options, register
# Importing the model modules registers their models.
from jaxvision.models.deeplab import ContextDecoder, DeepLabV3Plus, TaskHeads
from jaxvision.models.mobilenet import InvertedResidual, MobileNetV2
from jaxvision.models.resnet import ResNet, ResidualBlock

__all__ = ["ContextDecoder", "DeepLabV3Plus", "InvertedResidual", "MobileNetV2", "ResNet", "ResidualBlock", "TaskHeads",
           "create", "create_from_config", "list_models", "model_options", "register"]
