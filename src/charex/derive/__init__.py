"""How a derived model is made: magnitude pruning (+ fine-tuning), fine-tuning, quantization."""

from .finetune import finetune_model
from .prune import prunable_weights, prune_masks, prune_model, sparsity
from .quantize import cast_weights, quantize_int8

__all__ = ["cast_weights", "finetune_model", "prunable_weights", "prune_masks", "prune_model", "quantize_int8",
           "sparsity"]
