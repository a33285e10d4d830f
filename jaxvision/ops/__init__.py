"""Numerical operators without parameters (transforms)."""

from jaxvision.ops.dct import dct, dct_matrix, idct, masked_dct_matrix

__all__ = ["dct", "dct_matrix", "idct", "masked_dct_matrix"]
