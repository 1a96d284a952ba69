"""Learned components: regularizers, denoisers and their training.

Laid out by role: :mod:`~invjax.learned.priors` (what enters a :class:`~invjax.Problem`),
:mod:`~invjax.learned.networks` (denoisers and reconstruction networks),
:mod:`~invjax.learned.training` (the loop, losses, data) and :mod:`~invjax.learned.zoo`
(save / load / pretrained / import_weights); every public name is re-exported here.

* :class:`ConvexRidge`: the convex ridge regularizer CRR-NN (and its weakly convex variant
  WCRR-NN), a smooth :class:`~invjax.functionals.Functional` with a known gradient Lipschitz
  constant, usable wherever ``TV()`` goes;
* :class:`DnCNN`: a residual denoiser, optionally spectrally normalised (known Lipschitz bound);
* :class:`DenoiserPrior` (alias :data:`PnP`): any denoiser as the proximal step of ADMM, FISTA
  or :class:`HQS` (plug-and-play), with the contraction factors of the convergence statement
  (:func:`admm_contraction`, :func:`hqs_contraction`, :func:`fbs_contraction`);
* :class:`LearnedPrimalDual`: the unrolled learned primal-dual network (any operator);
* :class:`DEQ`: a deep-equilibrium reconstruction (a certified contraction; Anderson forward,
  implicit backward, memory independent of the iterations);
* :class:`MoDL`: model-based deep learning for MRI (a CNN denoiser and a CG data-consistency
  step, weights shared over the iterations); MRI data without downloads: :func:`brain_slices`,
  :func:`coil_sensitivities`, :func:`variable_density_mask`;
* :func:`train`: a jitted optax loop, data-parallel over local devices, with atomic, resumable
  checkpoints; :func:`denoising_loss`, :func:`denoising_validation`, and
  :func:`reconstruction_loss` for bilevel learning through a solver (implicit derivatives);
* data without downloads: :func:`load_images` (a folder, or images bundled with scikit-image),
  :func:`split`, :func:`patches`, :func:`patch_data`;
* models: :func:`save`, :func:`load`, and the shipped ones: :func:`available`,
  :func:`pretrained`, :func:`metadata`; published weights from torch/MatConvNet files the user
  has: :func:`import_weights` (DnCNN, :class:`DRUNet`, CRR-NN, WCRR-NN; :func:`read_state_dict` reads a ``.pth``
  without torch or arbitrary unpickling).
"""

from ..operators.mri_sampling import coil_sensitivities, variable_density_mask
from ..solvers import HQS, anderson
from .networks import DEQ, DEQStats, DnCNN, DRUNet, FFDNet, LearnedPrimalDual, MoDL, conv_operator_norm
from .priors import ConvexRidge, DenoiserPrior, LinearSpline, PnP, admm_contraction, fbs_contraction, hqs_contraction
from .training import (
    BUNDLED,
    CHECKPOINT_NAME,
    History,
    brain_slices,
    denoising_loss,
    denoising_validation,
    load_images,
    measure,
    patch_data,
    patches,
    reconstruction_loss,
    split,
    stack,
    supervised_loss,
    train,
    trainable,
)
from .zoo import available, import_weights, load, metadata, pretrained, read_state_dict, save

__all__ = [
    "BUNDLED",
    "CHECKPOINT_NAME",
    "ConvexRidge",
    "DEQ",
    "DEQStats",
    "DRUNet",
    "DenoiserPrior",
    "DnCNN",
    "FFDNet",
    "HQS",
    "History",
    "LearnedPrimalDual",
    "LinearSpline",
    "MoDL",
    "PnP",
    "admm_contraction",
    "anderson",
    "available",
    "brain_slices",
    "coil_sensitivities",
    "conv_operator_norm",
    "denoising_loss",
    "denoising_validation",
    "fbs_contraction",
    "hqs_contraction",
    "import_weights",
    "load",
    "load_images",
    "measure",
    "metadata",
    "patch_data",
    "patches",
    "pretrained",
    "read_state_dict",
    "reconstruction_loss",
    "save",
    "split",
    "stack",
    "supervised_loss",
    "train",
    "trainable",
    "variable_density_mask",
]
