"""Forward operators: linear, matrix-free equinox modules with exact adjoints."""

from .base import (
    Adjoint,
    ChannelScaled,
    Composed,
    Identity,
    LinearOperator,
    Scaled,
    Sum,
    check_adjoint,
    weighted,
)
from .convolution import Convolution, gaussian_psf
from .dense import Dense
from .downsample import Downsample
from .finite_difference import FiniteDifference
from .mask import Mask
from .mri import CartesianMRI
from .mri_sampling import coil_sensitivities, variable_density_mask
from .tomography import ParallelBeam2D, fbp

__all__ = [
    "Adjoint",
    "CartesianMRI",
    "ChannelScaled",
    "Composed",
    "Convolution",
    "Dense",
    "Downsample",
    "FiniteDifference",
    "Identity",
    "LinearOperator",
    "Mask",
    "ParallelBeam2D",
    "Scaled",
    "Sum",
    "check_adjoint",
    "coil_sensitivities",
    "fbp",
    "gaussian_psf",
    "variable_density_mask",
    "weighted",
]
