"""How a derived model is made: magnitude pruning (+ fine-tuning), fine-tuning, quantization, a backbone reused
for another task, a consistent permutation of the hidden units."""

from .finetune import finetune_model
from .permute import permute_units
from .prune import prunable_weights, prune_masks, prune_model, sparsity
from .quantize import cast_weights, quantize_int8
from .reuse import TASKS, relabel, reuse_backbone

__all__ = ["TASKS", "cast_weights", "finetune_model", "permute_units", "prunable_weights", "prune_masks",
           "prune_model", "quantize_int8", "relabel", "reuse_backbone", "sparsity"]
