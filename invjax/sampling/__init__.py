"""Posterior sampling: ULA, MYULA, SK-ROCK, PnP-ULA; streaming moments; diagnostics."""

from ._target import AbstractSampler, SamplerState, SamplingAlgorithm
from .accumulate import Moments
from .credible import RegionTest, credible_region_test
from .diagnostics import autocorrelation, effective_sample_size
from .driver import Posterior, sample
from .myula import MYULA
from .pnp_ula import PnPULA
from .skrock import SKROCK
from .ula import ULA

__all__ = [
    "MYULA",
    "SKROCK",
    "ULA",
    "AbstractSampler",
    "Moments",
    "PnPULA",
    "Posterior",
    "RegionTest",
    "SamplerState",
    "SamplingAlgorithm",
    "autocorrelation",
    "credible_region_test",
    "effective_sample_size",
    "sample",
]
