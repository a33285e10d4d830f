"""Weight import from PyTorch (torchvision / timm) and the converted-weights format."""

from jaxvision.convert.converter import (ConversionError, convert_state_dict, convert_weights, export_state_dict,
                                         load_pretrained, save_pretrained)
from jaxvision.convert.torch_files import WeightFileError, read_state_dict, write_safetensors

__all__ = ["ConversionError", "WeightFileError", "convert_state_dict", "convert_weights", "export_state_dict",
           "load_pretrained", "read_state_dict", "save_pretrained", "write_safetensors"]
