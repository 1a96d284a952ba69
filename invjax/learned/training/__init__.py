"""Training: the one resumable loop (:func:`train`), its losses, and data without downloads
(image folders and scikit-image's images, patches; MRI slices of a brain template)."""

from .data import BUNDLED, load_images, patch_data, patches, split, stack
from .loop import CHECKPOINT_NAME, History, train, trainable
from .losses import denoising_loss, denoising_validation, measure, reconstruction_loss, supervised_loss
from .mri_data import brain_slices

__all__ = [
    "BUNDLED",
    "CHECKPOINT_NAME",
    "History",
    "brain_slices",
    "denoising_loss",
    "denoising_validation",
    "load_images",
    "measure",
    "patch_data",
    "patches",
    "reconstruction_loss",
    "split",
    "stack",
    "supervised_loss",
    "train",
    "trainable",
]
