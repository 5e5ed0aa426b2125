"""Architectures, the [0, 1]-pixel wrapper, safe model loading and the weight digest."""

from .architectures import ARCHITECTURES, build_arch
from .loading import load_model, read_card, save_model
from .normalized import NORMALIZATIONS, Normalized, resolve_normalization, state_digest

__all__ = ["ARCHITECTURES", "NORMALIZATIONS", "Normalized", "build_arch", "load_model", "read_card",
           "resolve_normalization", "save_model", "state_digest"]
