r"""Training images: a folder of grayscale images (or images bundled with scikit-image), a
train/held-out split, and random patches drawn as a pure function of a key.

Nothing here downloads. ``load_images(folder)`` reads every PNG (and other formats the
installed reader knows) of a folder, sorted by file name; ``load_images()`` without a folder
uses grayscale photographs shipped inside scikit-image. For natural-image denoisers the
standard training set is 400 grayscale 180x180 crops of the Berkeley segmentation data
(Zhang et al., IEEE TIP 2017); pass its folder.

:func:`patches` is a pure function of its key: ``patches(jax.random.fold_in(key, step), ...)``
is the batch of step ``step``, so a run resumed at any step draws exactly the batches it would
have drawn (see :func:`invjax.learned.train`).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["BUNDLED", "Stacked", "load_images", "patch_data", "patches", "split", "stack"]

# grayscale photographs inside scikit-image (no download: its legacy data directory)
BUNDLED = ("camera", "coins", "moon", "page", "text", "clock", "brick", "grass", "gravel")
"""The names of the grayscale photographs in scikit-image's data module that
:func:`load_images` reads without a folder (its default ``names``; nothing is downloaded)."""

_EXTENSIONS = (".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg", ".pgm")
_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601


def _read(path: Path) -> np.ndarray:
    """The image at ``path`` as a numpy array, with whichever reader is installed."""
    try:
        from PIL import Image
    except ImportError:
        Image = None
    if Image is not None:
        with Image.open(path) as im:
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                return np.asarray(im)
            return np.asarray(im.convert("L" if im.mode in ("1", "L", "P", "LA") else "RGB"))
    try:
        import matplotlib.image as mpimg
    except ImportError:
        mpimg = None
    if mpimg is not None and path.suffix.lower() == ".png":
        return mpimg.imread(path)
    try:
        import skimage.io
    except ImportError as err:
        raise ImportError(
            "load_images: reading images needs Pillow, matplotlib (PNG only) or scikit-image; none is installed"
        ) from err
    return skimage.io.imread(path)


def _to_gray01(img: np.ndarray, name: str) -> np.ndarray:
    """``img`` as float32 in [0, 1], colour converted to luma (BT.601), alpha dropped."""
    img = np.asarray(img)
    if img.dtype == bool:
        img = img.astype(np.float32)
    elif np.issubdtype(img.dtype, np.integer):
        img = img.astype(np.float64) / np.iinfo(img.dtype).max
    elif not np.issubdtype(img.dtype, np.floating):
        raise TypeError(f"load_images: image {name!r} has unsupported dtype {img.dtype}")
    if img.ndim == 3 and img.shape[-1] in (3, 4):
        img = img[..., :3] @ _LUMA
    elif img.ndim == 3 and img.shape[-1] in (1, 2):
        img = img[..., 0]
    if img.ndim != 2:
        raise ValueError(f"load_images: image {name!r} must be 2-D grayscale or RGB(A), got shape {img.shape}")
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def load_images(
    folder: str | os.PathLike | None = None, *, names: tuple[str, ...] | None = None, with_names: bool = False
):
    """Grayscale images as float32 arrays in ``[0, 1]``.

    Arguments:
        folder: a directory; every file with an image extension (PNG, TIFF, BMP, JPEG, PGM) is
            read, in sorted file-name order. ``None``: images bundled with scikit-image.
        names: with ``folder=None``, which bundled images (default :data:`BUNDLED`:
            ``camera, coins, moon, page, text, clock, brick, grass, gravel``).
        with_names: also return the file (or bundled image) names.

    Returns:
        A list of ``(H_i, W_i)`` float32 numpy arrays (sizes may differ), or ``(images,
        names)``. Colour is converted to luma (ITU-R BT.601), integer images are divided by
        their dtype's maximum, floats clipped to ``[0, 1]``.

    Raises:
        FileNotFoundError: the folder does not exist or holds no images.
        ImportError: no reader installed (Pillow, matplotlib or scikit-image), or scikit-image
            missing for the bundled images.
        ValueError: a ``names`` entry that is not bundled, or ``names`` with a ``folder``.

    Example:
        >>> images, names = ij.learned.load_images(names=("camera", "coins"), with_names=True)
        >>> names, [im.shape for im in images], images[0].dtype
        (['camera', 'coins'], [(512, 512), (303, 384)], dtype('float32'))
        >>> bool(min(im.min() for im in images) >= 0 and max(im.max() for im in images) <= 1)
        True
    """
    if folder is None:
        try:
            import skimage.data
        except ImportError as err:
            raise ImportError(
                "load_images: without a folder the images come from scikit-image, which is not installed"
            ) from err
        names = BUNDLED if names is None else tuple(names)
        images = []
        for n in names:
            if n not in BUNDLED:
                raise ValueError(f"load_images: `names` must be among the bundled images {BUNDLED}, got {n!r}")
            images.append(_to_gray01(getattr(skimage.data, n)(), n))
        return (images, list(names)) if with_names else images
    if names is not None:
        raise ValueError("load_images: `names` selects bundled images and needs folder=None")
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"load_images: `folder` {str(root)!r} is not a directory")
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in _EXTENSIONS)
    if not files:
        raise FileNotFoundError(f"load_images: no images ({', '.join(_EXTENSIONS)}) in {str(root)!r}")
    images = [_to_gray01(_read(p), p.name) for p in files]
    return (images, [p.name for p in files]) if with_names else images


def split(images, held_out: int | float = 0.1):
    """``(train, held_out)``: the last images (in the given order, i.e. file-name order from
    :func:`load_images`) are held out.

    Arguments:
        images: a sequence of images.
        held_out: how many to hold out (an int ``>= 1``) or what fraction (a float in (0, 1),
            rounded, at least one image).

    Returns:
        ``(train, held_out)``, two lists.

    Raises:
        TypeError: a boolean ``held_out``.
        ValueError: ``held_out`` out of range, or a split leaving either side empty.

    Example:
        >>> ij.learned.split(list(range(10)), held_out=0.2)
        ([0, 1, 2, 3, 4, 5, 6, 7], [8, 9])
    """
    n = len(images)
    if isinstance(held_out, bool):
        raise TypeError(f"split: `held_out` must be an int or a float in (0, 1), got {held_out!r}")
    if isinstance(held_out, (int, np.integer)):
        k = int(held_out)
    elif isinstance(held_out, float) and 0 < held_out < 1:
        k = max(1, round(held_out * n))
    else:
        raise ValueError(f"split: `held_out` must be an int >= 1 or a float in (0, 1), got {held_out!r}")
    if not 1 <= k < n:
        raise ValueError(f"split: `held_out` must leave at least one image on each side of {n} images, got {k}")
    return list(images[: n - k]), list(images[n - k :])


class Stacked(NamedTuple):
    """Images of different sizes in one array (from :func:`stack`).

    Attributes:
        images: ``(N, H, W)`` float32, each image zero-padded to the largest ``H, W``.
        sizes: ``(N, 2)`` int32, each image's own ``(H_i, W_i)``.
    """

    images: jax.Array
    sizes: jax.Array


def stack(images) -> Stacked:
    """Images of different sizes zero-padded into one ``(N, H, W)`` float32 array, with their
    sizes: a :class:`Stacked` for :func:`patches`.

    Arguments:
        images: a non-empty sequence of 2-D arrays ``(H_i, W_i)``.

    Returns:
        ``Stacked(images, sizes)``: ``images`` ``(N, max H_i, max W_i)`` float32 (each image
        at the top left, zeros elsewhere) and ``sizes`` ``(N, 2)`` int32.

    Raises:
        ValueError: no images, or one that is not 2-D.

    Example:
        >>> s = ij.learned.stack([np.ones((2, 3)), np.ones((4, 2))])
        >>> s.images.shape, s.images.dtype, s.sizes.tolist()
        ((2, 4, 3), dtype('float32'), [[2, 3], [4, 2]])
        >>> s.images.sum(axis=(1, 2)).tolist()  # the padding is zeros
        [6.0, 8.0]
    """
    if len(images) == 0:
        raise ValueError("stack: `images` is empty")
    arrays = [np.asarray(im, np.float32) for im in images]
    for i, a in enumerate(arrays):
        if a.ndim != 2:
            raise ValueError(f"stack: image {i} must be 2-D (H, W), got shape {a.shape}")
    h = max(a.shape[0] for a in arrays)
    w = max(a.shape[1] for a in arrays)
    out = np.zeros((len(arrays), h, w), np.float32)
    for i, a in enumerate(arrays):
        out[i, : a.shape[0], : a.shape[1]] = a
    return Stacked(jnp.asarray(out), jnp.asarray([a.shape for a in arrays], jnp.int32))


@functools.partial(jax.jit, static_argnames=("size", "batch"))
def _patches(key, stacked, sizes, size, batch):
    k_img, k_y, k_x, k_t = jax.random.split(key, 4)
    idx = jax.random.randint(k_img, (batch,), 0, stacked.shape[0])
    h, w = sizes[idx, 0], sizes[idx, 1]
    # uniform top-left corner within each image's own extent
    y0 = jnp.floor(jax.random.uniform(k_y, (batch,)) * (h - size + 1)).astype(jnp.int32)
    x0 = jnp.floor(jax.random.uniform(k_x, (batch,)) * (w - size + 1)).astype(jnp.int32)
    # one of the 8 symmetries of the square: transpose, flip rows, flip columns (3 random bits),
    # applied to the indices so that the patches come out of one gather
    t = jax.random.bernoulli(k_t, 0.5, (3, batch, 1, 1))
    r = jnp.arange(size)
    ri, ci = jnp.broadcast_to(r[:, None], (size, size)), jnp.broadcast_to(r[None, :], (size, size))
    ri, ci = jnp.where(t[0], ci, ri), jnp.where(t[0], ri, ci)
    ri = jnp.where(t[1], size - 1 - ri, ri)
    ci = jnp.where(t[2], size - 1 - ci, ci)
    return stacked[idx[:, None, None], y0[:, None, None] + ri, x0[:, None, None] + ci]


def patches(key, images, size: int, batch: int) -> jax.Array:
    """``batch`` random ``size x size`` patches, each under a random flip/rotation.

    Each patch picks an image uniformly, a top-left corner uniformly within that image, and one
    of the 8 symmetries of the square (an optional transpose, then optional flips of the rows and
    of the columns: the rotations by quarter turns and their mirror images). A pure function of
    ``key``: the same key gives the same batch, on any machine.

    Arguments:
        key: ``jax.random`` key (e.g. ``jax.random.fold_in(base_key, step)``).
        images: a list of 2-D images, or a :class:`Stacked` from :func:`stack` (stack once
            when drawing many batches).
        size: patch side (static int; at most the smallest image side).
        batch: patches per batch (static int).

    Returns:
        float32 array ``(batch, size, size)``.

    Raises:
        ValueError: ``size`` or ``batch`` not an int ``>= 1``, or ``size`` above the smallest
            image side.

    Example:
        Every patch is a window of an image under one of the 8 symmetries, so its values are
        those of the window whose top-left pixel holds its minimum (on this ramp image):

        >>> image = np.arange(64, dtype=np.float32).reshape(8, 8) / 64
        >>> p = ij.learned.patches(jax.random.key(0), [image], size=4, batch=3)
        >>> p.shape, p.dtype
        ((3, 4, 4), dtype('float32'))
        >>> y0, x0 = divmod(int(p[0].min() * 64), 8)
        >>> bool(np.array_equal(np.sort(p[0].ravel()), np.sort(image[y0:y0 + 4, x0:x0 + 4].ravel())))
        True
        >>> bool(jnp.array_equal(p, ij.learned.patches(jax.random.key(0), [image], 4, 3)))  # same key
        True
    """
    stacked, sizes = images if isinstance(images, Stacked) else stack(images)
    for name, v in (("size", size), ("batch", batch)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"patches: `{name}` must be an int >= 1, got {v!r}")
    smallest = int(np.min(np.asarray(sizes)))
    if size > smallest:
        raise ValueError(f"patches: `size` must be at most the smallest image side {smallest}, got {size}")
    return _patches(key, stacked, sizes, int(size), int(batch))


def patch_data(images, size: int, batch: int):
    """A ``data(key, step)`` function for :func:`invjax.learned.train`: ``batch`` random
    patches (:func:`patches`) from ``key`` (the trainer passes a key derived from its own key and
    the step), shape ``(batch, size, size)``.

    Arguments:
        images: a list of 2-D images (stacked once here, :func:`stack`).
        size: patch side (at most the smallest image side).
        batch: patches per call.

    Returns:
        ``data(key, step) -> (batch, size, size)`` float32, ``patches(key, images, size,
        batch)`` (``step`` is unused: the key already depends on it).

    Raises:
        ValueError: ``size`` above the smallest image side, or a bad image (as :func:`stack`).

    Example:
        >>> image = np.arange(64, dtype=np.float32).reshape(8, 8) / 64
        >>> data = ij.learned.patch_data([image], size=4, batch=2)
        >>> batch = data(jax.random.key(3), 0)
        >>> batch.shape, bool(jnp.array_equal(batch, ij.learned.patches(jax.random.key(3), [image], 4, 2)))
        ((2, 4, 4), True)
    """
    stacked = stack(images)
    smallest = int(np.min(np.asarray(stacked[1])))
    if size > smallest:
        raise ValueError(f"patch_data: `size` must be at most the smallest image side {smallest}, got {size}")

    def data(key, step):
        return patches(key, stacked, size, batch)

    return data
