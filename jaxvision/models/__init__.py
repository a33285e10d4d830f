"""Whole networks, registered by name: `create("resnet50", num_classes=10)`, `create_from_config(config.model)`."""

from jaxvision.models.registry import (count_params, create, create_from_config, list_models, model_options,
                                      register)
# Importing the model modules registers their models.
from jaxvision.models.adaptive import DeepLabV3PlusAdaptive
from jaxvision.models.adas import Cerberus
from jaxvision.models.bert import Bert
from jaxvision.models.dms import DMSNet
from jaxvision.models.deeplab import ContextDecoder, DeepLabV3Plus, TaskHeads
from jaxvision.models.efficientnet import EfficientNet, MBConv
from jaxvision.models.mobilenet import InvertedResidual, MobileNetV2
from jaxvision.models.multitask import DeepLabV3PlusBranched, DeepLabV3PlusDistillation, TaskAttention
from jaxvision.models.regnet import RegNet, ResBottleneckBlock
from jaxvision.models.resnet import ResNet, ResidualBlock
from jaxvision.models.transformer_multitask import DeepLabV3PlusTransformer
from jaxvision.models.vit import VisionTransformer
from jaxvision.layers.stochastic_depth import StochasticDepth

__all__ = ["Bert", "Cerberus", "ContextDecoder", "DMSNet", "DeepLabV3Plus", "DeepLabV3PlusAdaptive",
           "DeepLabV3PlusBranched", "DeepLabV3PlusDistillation", "DeepLabV3PlusTransformer", "EfficientNet",
           "InvertedResidual", "MBConv", "MobileNetV2", "RegNet", "ResBottleneckBlock", "ResNet", "ResidualBlock",
           "StochasticDepth", "TaskAttention", "TaskHeads", "VisionTransformer", "count_params", "create",
           "create_from_config", "list_models", "model_options", "register"]
