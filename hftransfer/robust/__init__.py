"""Robust fine-tuning from saved models: WiSE-FT weight interpolation and model soups."""

from hftransfer.robust.interpolate import InterpolationResult, interpolate
from hftransfer.robust.soup import SoupResult, soup


__all__ = ["InterpolationResult", "SoupResult", "interpolate", "soup"]
