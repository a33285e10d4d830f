"""jaxvision: efficient computer vision in JAX/Flax."""

__version__ = "0.1.0"
