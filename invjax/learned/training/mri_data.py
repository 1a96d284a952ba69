r"""MRI training data without downloads: axial slices of a brain template.

:func:`brain_slices`: axial slices of the MNI152 2009a T1 template (Fonov et al., NeuroImage
2011) that ships inside nilearn's wheel, split by position into train, validation and test
blocks. The coil maps and undersampling masks that simulate k-space from them live beside the
MRI operator (:func:`invjax.operators.coil_sensitivities`,
:func:`invjax.operators.variable_density_mask`).

The template is an average of many registered brains: smoother than a single subject and
symmetric left-right, so it is an easy stand-in for real k-space data, not a replacement.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ..._misc import positive_int
from ...operators.base import default_float

__all__ = ["SPLITS", "TEMPLATE", "brain_slices"]

SPLITS = ("train", "validation", "test")
TEMPLATE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"  # in nilearn/datasets/data/

_INSTALL = 'pip install "invjax[train]"'


def _real_dtype(dtype, who: str):
    dtype = jnp.dtype(default_float() if dtype is None else dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{who}: `dtype` must be a real floating dtype, got {dtype.name}")
    return dtype


# ---- brain slices --------------------------------------------------------------------------------
@functools.cache
def _volume() -> np.ndarray:
    """The template as float32 ``(x, y, z)`` (1 mm, RAS: x left->right, y posterior->anterior,
    z inferior->superior), read once per process."""
    try:
        import nibabel
        import nilearn
    except ImportError as err:
        raise ImportError(
            f"brain_slices needs nilearn (the MNI152 template ships in its wheel) and nibabel (to read it): "
            f"{err.name or err} is not installed; install them with `{_INSTALL}`"
        ) from err
    path = Path(nilearn.__file__).parent / "datasets" / "data" / TEMPLATE
    if not path.is_file():
        raise FileNotFoundError(
            f"brain_slices: the MNI152 template {TEMPLATE} is missing from nilearn's installation "
            f"({path.parent}); nilearn {getattr(nilearn, '__version__', '?')} may have moved it"
        )
    img = nibabel.as_closest_canonical(nibabel.load(str(path)))
    return np.asarray(img.dataobj, dtype=np.float32)


def _brain_range(volume: np.ndarray, min_area: float) -> tuple[int, int]:
    """The first and one-past-last axial index whose brain area (pixels above 10 % of the
    volume's maximum) is at least ``min_area`` times the largest slice's."""
    area = (volume > 0.1 * volume.max()).sum(axis=(0, 1)).astype(np.float64)
    keep = np.flatnonzero(area >= min_area * area.max())
    return int(keep[0]), int(keep[-1]) + 1


def _blocks(lo: int, hi: int, gap: int, fractions) -> dict[str, np.ndarray]:
    """Axial indices of each split: ``[train | gap | test | gap | validation | gap | train]``,
    the held-out blocks in the middle of ``[lo, hi)``."""
    count = hi - lo
    n_test = max(1, round(fractions[2] * count))
    n_val = max(1, round(fractions[1] * count))
    held = n_test + n_val + gap
    start = lo + (count - held) // 2
    test = np.arange(start, start + n_test)
    val = np.arange(start + n_test + gap, start + held)
    train = np.concatenate([np.arange(lo, start - gap), np.arange(start + held + gap, hi)])
    if train.size < 1:
        raise ValueError(
            f"brain_slices: {count} slices with brain leave none for training after the test ({n_test}) and "
            f"validation ({n_val}) blocks and 3 gaps of {gap}; lower `gap` or `min_area`"
        )
    return {"train": train, "validation": val, "test": test}


def _square(image: np.ndarray) -> np.ndarray:
    """Zero-pad a 2-D image to a square, centred."""
    h, w = image.shape
    s = max(h, w)
    out = np.zeros((s, s), image.dtype)
    out[(s - h) // 2 : (s - h) // 2 + h, (s - w) // 2 : (s - w) // 2 + w] = image
    return out


def brain_slices(
    n: int,
    split: str = "train",
    *,
    gap: int = 5,
    min_area: float = 0.3,
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    dtype=None,
    with_index: bool = False,
):
    r"""Axial slices of the MNI152 T1 brain template shipped inside nilearn, resized to ``n x n``.

    The template (``mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz``, 197 x 233 x 189 voxels
    of 1 mm, brain only) is read with nibabel. Axial slices whose brain area is at least
    ``min_area`` of the largest slice's are kept (about 130 with the default); the others are
    mostly empty. They are split **by position** into contiguous blocks, so that no held-out
    slice has a training slice within ``gap`` mm (neighbouring slices of the smooth template
    are near-duplicates): from inferior to superior,

    ``train | gap | test | gap | validation | gap | train``

    with the test and validation blocks (``fractions[2]`` and ``fractions[1]`` of the kept
    slices) in the middle of the brain, where the anatomy is richest. The split is a fixed
    function of the arguments (no randomness).

    Each slice is oriented for display (anterior at the top, the subject's right on the right:
    the neurological convention), zero-padded to a square, resized to ``n x n``
    (linear, anti-aliased) and divided by its own maximum, so that its values lie in
    ``[0, 1]`` with maximum 1 and background 0.

    Arguments:
        n: side of the returned images (int >= 8).
        split: ``"train"``, ``"validation"`` or ``"test"``.
        gap: slices (mm) left out between blocks (int >= 0, default 5).
        min_area: minimum brain area relative to the largest slice (in (0, 1), default 0.3).
        fractions: ``(train, validation, test)`` shares of the kept slices (the train share
            is what remains after the gaps; the other two must be in (0, 0.5)).
        dtype: real float dtype (default float32, float64 under ``jax_enable_x64``).
        with_index: also return the template's axial index (z, in voxels) of each slice.

    Returns:
        ``(S, n, n)`` array (and ``(S,)`` int numpy indices with ``with_index``), slices in
        inferior-to-superior order.

    Raises:
        ImportError: nilearn or nibabel missing (``pip install "invjax[train]"``).
        ValueError: a bad argument, named.

    Example:
        >>> train, z_train = ij.learned.brain_slices(16, "train", with_index=True)
        >>> test, z_test = ij.learned.brain_slices(16, "test", with_index=True)
        >>> train.shape, test.shape, train.dtype
        ((66, 16, 16), (23, 16, 16), dtype('float32'))
        >>> float(train.min()), float(train.max())
        (0.0, 1.0)
        >>> int(np.abs(z_train[:, None] - z_test[None, :]).min())  # more than gap = 5 slices apart
        6
    """
    who = "brain_slices"
    n = positive_int(n, "n", who, 8)
    gap = positive_int(gap, "gap", who, 0)
    if split not in SPLITS:
        raise ValueError(f"{who}: `split` must be one of {SPLITS}, got {split!r}")
    if not (isinstance(min_area, (int, float)) and 0 < min_area < 1):
        raise ValueError(f"{who}: `min_area` must be in (0, 1), got {min_area!r}")
    try:
        fractions = tuple(float(f) for f in fractions)
    except TypeError as err:
        raise ValueError(
            f"{who}: `fractions` must be three numbers (train, validation, test), got {fractions!r}"
        ) from err
    if len(fractions) != 3 or not all(0 < f < 0.5 for f in fractions[1:]):
        raise ValueError(f"{who}: `fractions` must be (train, validation, test) with validation and test in (0, 0.5), "
                         f"got {fractions!r}")
    dtype = _real_dtype(dtype, who)
    volume = _volume()
    lo, hi = _brain_range(volume, float(min_area))
    index = _blocks(lo, hi, gap, fractions)[split]
    slices = np.stack([_square(volume[:, :, z].T[::-1, :]) for z in index])  # (S, 233, 233)
    images = jax.image.resize(jnp.asarray(slices), (len(index), n, n), method="linear", antialias=True)
    images = np.clip(np.asarray(images, np.float64), 0, None)
    images /= images.max(axis=(1, 2), keepdims=True)
    images = jnp.asarray(images, dtype)
    return (images, index) if with_index else images
