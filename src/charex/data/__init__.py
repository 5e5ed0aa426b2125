"""Datasets: CIFAR-10 (official batches, ImageFolder, download) and generic ImageFolder trees."""

from .cifar10 import CIFAR10_CLASSES, ArrayDataset, default_cifar10_root, download_cifar10, load_cifar10
from .folder import ImageFolder

__all__ = ["CIFAR10_CLASSES", "ArrayDataset", "ImageFolder", "default_cifar10_root", "download_cifar10",
           "load_cifar10"]
