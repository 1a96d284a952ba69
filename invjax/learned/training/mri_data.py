r"""MRI training data without downloads: brain slices, coil sensitivities, undersampling masks.

* :func:`brain_slices`: axial slices of the MNI152 2009a T1 template (Fonov et al.,
  NeuroImage 2011) that ships inside nilearn's wheel, split by position into train, validation
  and test blocks;
* :func:`coil_sensitivities`: smooth simulated receive-coil maps with ``sum_c |S_c|^2 = 1``;
* :func:`variable_density_mask`: 1-D variable-density Cartesian undersampling (whole
  phase-encode lines, a fully sampled centre), the masks of :class:`~invjax.operators.CartesianMRI`.

The template is an average of many registered brains: smoother than a single subject and
symmetric left-right, so it is an easy stand-in for real k-space data, not a replacement.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ...operators.base import default_complex, default_float

__all__ = ["SPLITS", "TEMPLATE", "brain_slices", "coil_sensitivities", "variable_density_mask"]

SPLITS = ("train", "validation", "test")
TEMPLATE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"  # in nilearn/datasets/data/

_INSTALL = 'pip install "invjax[train]"'


def _positive_int(value, name: str, who: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{who}: `{name}` must be an int >= {minimum}, got {value!r}")
    return int(value)


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

    Args:
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
        >>> train = brain_slices(64, "train")          # (~85, 64, 64) float32 in [0, 1]
        >>> test = brain_slices(64, "test")            # (~26, 64, 64), disjoint from train
    """
    who = "brain_slices"
    n = _positive_int(n, "n", who, 8)
    gap = _positive_int(gap, "gap", who, 0)
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


# ---- coil sensitivities --------------------------------------------------------------------------
def coil_sensitivities(
    n: int,
    coils: int = 8,
    *,
    key=None,
    radius: float = 1.2,
    width: float = 0.8,
    phase: float = 1.0,
    dtype=None,
) -> jax.Array:
    r"""Smooth simulated receive-coil sensitivity maps, normalised to ``sum_c |S_c|^2 = 1``.

    Coil ``c`` sits at angle ``theta_c = 2 pi c / C`` (plus a random jitter with ``key``) on a
    circle of ``radius`` around the image centre, in coordinates where the image spans
    ``[-1, 1]^2``. Its raw map is a Gaussian bump with a smooth phase,

    .. math:: s_c(r) = \exp\!\Big(-\frac{\|r - p_c\|^2}{2 w^2}\Big)\,
              \exp\!\big(i\,(\phi_c + \pi\,\mathrm{phase}\; \langle r, u_c \rangle)\big),
              \qquad p_c = \mathrm{radius}\,(\cos\theta_c, \sin\theta_c),

    with ``u_c`` the unit vector rotated a quarter turn from ``p_c`` and ``phi_c`` a phase offset
    (``2 pi c / C``, or uniform random with ``key``). The maps are then divided by the root
    sum of squares, ``S_c = s_c / (sum_k |s_k|^2)^{1/2}``, so that ``sum_c |S_c|^2 = 1`` at every
    pixel: the multi-coil :class:`~invjax.operators.CartesianMRI` then has norm 1 and ``A^H A``
    is the identity under full sampling (the "SENSE-normalised" convention). One coil gives a
    pure smooth phase map ``|S_1| = 1``.

    Args:
        n: image side (int >= 2).
        coils: number of coils ``C`` (int >= 1, default 8).
        key: optional ``jax.random`` key: jitter the coil angles (up to a quarter of their
            spacing), widths (+-20 %) and phase offsets. ``None``: the deterministic layout.
        radius: distance of the coils from the centre (default 1.2: just outside the image).
        width: Gaussian width ``w`` (default 0.8; larger is smoother and less distinct).
        phase: strength of the phase ramp across the image, in half turns (default 1.0).
        dtype: complex dtype (default complex64, complex128 under ``jax_enable_x64``).

    Returns:
        Complex array ``(C, n, n)``.

    Example:
        >>> S = coil_sensitivities(64, 8)
        >>> A = ij.operators.CartesianMRI(mask, sensitivities=S)
    """
    who = "coil_sensitivities"
    n = _positive_int(n, "n", who, 2)
    coils = _positive_int(coils, "coils", who)
    for name, v in (("radius", radius), ("width", width)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ValueError(f"{who}: `{name}` must be a finite float > 0, got {v!r}")
    if not (isinstance(phase, (int, float)) and math.isfinite(phase)):
        raise ValueError(f"{who}: `phase` must be a finite float, got {phase!r}")
    dtype = jnp.dtype(default_complex() if dtype is None else dtype)
    if not jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError(f"{who}: `dtype` must be complex, got {dtype.name}")
    return _coil_maps(n, coils, key, float(radius), float(width), float(phase), dtype)


@functools.partial(jax.jit, static_argnums=(0, 1, 3, 4, 5, 6))
def _coil_maps(n, coils, key, radius, width, phase, dtype):
    real = jnp.finfo(dtype).dtype
    c = jnp.arange(coils, dtype=real)
    theta = 2 * jnp.pi * c / coils
    offset = 2 * jnp.pi * c / coils
    widths = jnp.full((coils,), width, real)
    if key is not None:
        k1, k2, k3 = jax.random.split(key, 3)
        theta = theta + (jnp.pi / (2 * coils)) * jax.random.uniform(k1, (coils,), real, -1, 1)
        widths = widths * (1 + 0.2 * jax.random.uniform(k2, (coils,), real, -1, 1))
        offset = jax.random.uniform(k3, (coils,), real, 0, 2 * jnp.pi)
    t = (jnp.arange(n, dtype=real) + 0.5) / n * 2 - 1  # pixel centres in [-1, 1]
    rows, cols = jnp.meshgrid(t, t, indexing="ij")
    px, py = radius * jnp.cos(theta), radius * jnp.sin(theta)
    d2 = (cols[None] - px[:, None, None]) ** 2 + (rows[None] - py[:, None, None]) ** 2
    magnitude = jnp.exp(-d2 / (2 * widths[:, None, None] ** 2))
    ramp = -jnp.sin(theta)[:, None, None] * cols[None] + jnp.cos(theta)[:, None, None] * rows[None]
    angle = offset[:, None, None] + jnp.pi * phase * ramp
    maps = magnitude * jax.lax.complex(jnp.cos(angle), jnp.sin(angle))
    rss = jnp.sqrt(jnp.sum(jnp.abs(maps) ** 2, axis=0))
    return (maps / rss).astype(dtype)


# ---- undersampling masks -------------------------------------------------------------------------
def variable_density_mask(
    n: int,
    acceleration: float = 4,
    *,
    key,
    center_fraction: float = 0.08,
    power: float = 2.0,
    centered: bool = False,
    dtype=None,
) -> jax.Array:
    r"""A random 1-D variable-density Cartesian undersampling mask ``(n, n)``: whole
    phase-encode lines (columns), the centre of k-space fully sampled.

    ``L = round(n / acceleration)`` of the ``n`` columns are sampled: the
    ``round(center_fraction n)`` (at least 1) nearest to the zero frequency, and the rest drawn
    without replacement from the other columns with probability proportional to

    .. math:: p(k) \propto \big(1 - |k| / (n/2 + 1)\big)^{\mathrm{power}},

    ``k`` the signed frequency of the column (a polynomial variable density, as in Lustig,
    Donoho & Pauly, MRM 2007). Every row of k-space (the read-out direction) is sampled in the
    chosen columns, so ``mask.mean() == L / n`` exactly (``1 / acceleration`` when it divides
    ``n``).

    Args:
        n: side of k-space (int >= 2).
        acceleration: undersampling factor ``> 1`` (default 4); at most ``n``.
        key: ``jax.random`` key (keyword, required). The mask is a pure function of it, and
            of the other arguments: jittable with ``n`` static, vmappable over keys.
        center_fraction: share of the columns in the fully sampled centre (default 0.08, the
            fastMRI value at 4x); must leave no more than ``L`` columns.
        power: decay of the density away from the centre (default 2; 0 is uniform).
        centered: the k-space convention of the operator: ``False`` (default, as
            :class:`~invjax.operators.CartesianMRI`'s default) puts the zero frequency at index
            0, ``True`` at index ``n // 2``.
        dtype: real float dtype of the 0/1 mask (default float32, float64 under x64).

    Returns:
        ``(n, n)`` array of 0 and 1.

    Example:
        >>> m = variable_density_mask(64, 4, key=jax.random.PRNGKey(0))
        >>> float(m.mean())
        0.25
    """
    who = "variable_density_mask"
    n = _positive_int(n, "n", who, 2)
    try:
        acceleration = float(acceleration)
    except TypeError as err:
        raise ValueError(f"{who}: `acceleration` must be a float > 1, got {acceleration!r}") from err
    if not (math.isfinite(acceleration) and 1 < acceleration <= n):
        raise ValueError(f"{who}: `acceleration` must be a float in (1, n={n}], got {acceleration!r}")
    if not (isinstance(center_fraction, (int, float)) and 0 <= center_fraction < 1):
        raise ValueError(f"{who}: `center_fraction` must be in [0, 1), got {center_fraction!r}")
    if not (isinstance(power, (int, float)) and math.isfinite(power) and power >= 0):
        raise ValueError(f"{who}: `power` must be a finite float >= 0, got {power!r}")
    if key is None:
        raise ValueError(f"{who}: `key` is required (a jax.random key)")
    dtype = _real_dtype(dtype, who)
    lines = max(1, round(n / acceleration))
    centre = max(1, round(center_fraction * n))
    if centre > lines:
        raise ValueError(
            f"{who}: `center_fraction`={center_fraction} asks for {centre} centre lines, more than the "
            f"{lines} lines of acceleration {acceleration} at n={n}"
        )
    # columns in centred order: signed frequency k = j - n // 2 at index j
    k = np.arange(n) - n // 2
    order = np.argsort(np.abs(k), kind="stable")
    is_centre = np.zeros(n, bool)
    is_centre[order[:centre]] = True
    density = np.where(is_centre, 0.0, (1 - np.abs(k) / (n / 2 + 1)) ** power)
    return _mask(key, tuple(is_centre.tolist()), tuple((density / density.sum()).tolist()), lines - centre,
                 bool(centered), dtype)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5))
def _mask(key, is_centre, density, rest, centered, dtype):
    columns = jnp.asarray(is_centre, dtype)
    if rest > 0:
        picked = jax.random.choice(key, len(is_centre), (rest,), replace=False, p=jnp.asarray(density, dtype))
        columns = columns.at[picked].set(1)
    if not centered:
        columns = jnp.fft.ifftshift(columns)
    n = len(is_centre)
    return jnp.broadcast_to(columns[None, :], (n, n))
