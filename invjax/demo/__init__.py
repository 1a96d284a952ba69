"""The main job, ``invjax demo``: deblurring, inpainting, sparse-view CT and MRI at one size, each
reconstructed by its baseline, TV with the weight chosen without the ground truth (SURE; the
discrepancy principle beside it), the shipped learned models, and the grid oracle as reference.

Modules: :mod:`~invjax.demo.tasks` (the problems), :mod:`~invjax.demo.sweep` (one batched solve
over a weight grid and the rules), :mod:`~invjax.demo.run` (the run, its files),
:mod:`~invjax.demo.report` (table, progress, figure).
"""

from .run import DEFAULT_SIZE, MIN_SIZE, run_demo
from .tasks import TASKS

__all__ = ["DEFAULT_SIZE", "MIN_SIZE", "TASKS", "run_demo"]
