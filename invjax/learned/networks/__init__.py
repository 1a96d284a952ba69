"""Learned networks: the denoisers (:class:`DnCNN`, :class:`FFDNet`, :class:`DRUNet`;
``denoise(y, sigma)``) and the reconstruction networks bound to an operator
(:class:`LearnedPrimalDual`, :class:`MoDL`, :class:`DEQ`; ``model(y)``). Their convolutions run
channels-last through one helper that stays fast inside solver loops."""

from .deq import DEQ, DEQStats
from .dncnn import DnCNN, conv_operator_norm
from .drunet import DRUNet
from .ffdnet import FFDNet
from .modl import MoDL
from .unrolled import LearnedPrimalDual

__all__ = ["DEQ", "DEQStats", "DRUNet", "DnCNN", "FFDNet", "LearnedPrimalDual", "MoDL", "conv_operator_norm"]
