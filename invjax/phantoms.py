r"""Test images: the Shepp–Logan phantom, random ellipses, and two bundled photographs.

Ellipse phantoms live on the image domain :math:`[-1, 1]^2` with ``x`` to the right and ``y``
upwards. An ``n × n`` image ``img[i, j]`` samples the pixel centred at

.. math::
    x_j = -1 + (j + \tfrac12)\,\tfrac{2}{n}, \qquad y_i = 1 - (i + \tfrac12)\,\tfrac{2}{n},

so row 0 is the top (``y`` near 1) and column 0 the left (``x`` near -1), as an image is
displayed. An ellipse is the row ``(intensity, a, b, x0, y0, phi)``: the set of points with

.. math::
    \Big(\frac{u}{a}\Big)^2 + \Big(\frac{v}{b}\Big)^2 \le 1, \quad
    u = (x - x_0)\cos\varphi + (y - y_0)\sin\varphi, \quad
    v = -(x - x_0)\sin\varphi + (y - y_0)\cos\varphi,

i.e. semi-axis ``a`` along the direction at angle ``phi`` (radians, counter-clockwise from the
``x`` axis) and ``b`` perpendicular to it. Phantoms sum ``intensity`` times the indicator of
each ellipse. :func:`radon_ellipses` gives their exact line integrals, for testing
tomography operators.

The photograph loaders (:func:`camera`, :func:`mri_slice`) read data bundled with
scikit-image and matplotlib (``pip install invjax[demo]``); nothing is downloaded.
"""

from __future__ import annotations

import functools
import gzip

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray, Real

__all__ = [
    "camera",
    "ellipse",
    "mri_slice",
    "radon_ellipses",
    "random_ellipses",
    "shepp_logan",
    "shepp_logan_ellipses",
]

# Shepp & Logan (1974), as tabulated by Kak & Slaney, "Principles of Computerized Tomographic
# Imaging" (1988), Table 3.1: semi-axes a (along x), b (along y), centre, angle in degrees.
_SHEPP_LOGAN_GEOMETRY = (
    (0.6900, 0.9200, 0.00, 0.0000, 0.0),
    (0.6624, 0.8740, 0.00, -0.0184, 0.0),
    (0.1100, 0.3100, 0.22, 0.0000, -18.0),
    (0.1600, 0.4100, -0.22, 0.0000, 18.0),
    (0.2100, 0.2500, 0.00, 0.3500, 0.0),
    (0.0460, 0.0460, 0.00, 0.1000, 0.0),
    (0.0460, 0.0460, 0.00, -0.1000, 0.0),
    (0.0460, 0.0230, -0.08, -0.6050, 0.0),
    (0.0230, 0.0230, 0.00, -0.6060, 0.0),
    (0.0230, 0.0460, 0.06, -0.6050, 0.0),
)
_SHEPP_LOGAN_INTENSITY = (2.0, -0.98, -0.02, -0.02, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01)
# Toft (1996): the same ellipses with contrast raised for display; values in [0, 1].
_MODIFIED_INTENSITY = (1.0, -0.8, -0.2, -0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1)


def _dtype(dtype):
    dtype = jnp.result_type(float) if dtype is None else jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"phantoms: `dtype` must be a real floating dtype, got {dtype}")
    return dtype


def _check_size(n, name: str = "n") -> int:
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"phantoms: `{name}` must be a positive Python int, got {n!r}")
    return int(n)


def _grid(n: int, supersample: int, dtype) -> tuple[jax.Array, jax.Array]:
    """Sample coordinates ``(x, y)``, each ``(n*s, n*s)``: ``s × s`` per pixel."""
    m = n * supersample
    t = (-1.0 + (jnp.arange(m, dtype=dtype) + 0.5) * (2.0 / m)).astype(dtype)
    return t[None, :], -t[:, None]


def _indicator(x, y, a, b, x0, y0, phi) -> jax.Array:
    dx, dy = x - x0, y - y0
    cos, sin = jnp.cos(phi), jnp.sin(phi)
    u = dx * cos + dy * sin
    v = -dx * sin + dy * cos
    # A degenerate axis (a or b = 0) gives inf or nan here, hence an empty ellipse.
    return (u / a) ** 2 + (v / b) ** 2 <= 1


def _render(n: int, params, supersample: int, dtype) -> jax.Array:
    """Sum of ellipses ``params`` (K, 6) rasterised at ``n × n``, averaged over sub-samples."""
    supersample = _check_size(supersample, "supersample")
    # Geometry in at least float32: a float16 grid would misplace edges at moderate n.
    compute = jnp.promote_types(dtype, jnp.float32)
    image = _render_jit(n, jnp.asarray(params, dtype=compute), supersample, compute)
    return image.astype(dtype)


@functools.partial(jax.jit, static_argnums=(0, 2, 3))
def _render_jit(n: int, params: jax.Array, supersample: int, dtype) -> jax.Array:
    x, y = _grid(n, supersample, dtype)

    # One ellipse at a time keeps memory at one image, not K images.
    def add(image, p):
        return image + p[0] * _indicator(x, y, *p[1:]).astype(dtype), None

    fine = jnp.zeros((n * supersample,) * 2, dtype)
    fine, _ = jax.lax.scan(add, fine, params)
    if supersample == 1:
        return fine
    return fine.reshape(n, supersample, n, supersample).mean(axis=(1, 3))


def ellipse(
    n: int,
    intensity: Real[ArrayLike, ""],
    a: Real[ArrayLike, ""],
    b: Real[ArrayLike, ""],
    x0: Real[ArrayLike, ""],
    y0: Real[ArrayLike, ""],
    phi: Real[ArrayLike, ""],
    *,
    supersample: int = 1,
    dtype=None,
) -> Float[Array, "n n"]:
    """Rasterise one ellipse: ``intensity`` inside, 0 outside, on an ``n × n`` grid.

    See the module docstring for the coordinate convention. Parameters may be traced
    (inside ``jax.jit`` / ``jax.vmap``); ``n`` and ``supersample`` must be static ints.

    Arguments:
        n: image side, pixels.
        intensity: the value inside the ellipse.
        a: semi-axis along the direction ``phi``.
        b: semi-axis perpendicular to it.
        x0: centre, horizontal coordinate in ``[-1, 1]``.
        y0: centre, vertical coordinate in ``[-1, 1]`` (upwards).
        phi: rotation, radians counter-clockwise.
        supersample: average ``supersample × supersample`` point samples per pixel
            (anti-aliasing: edge pixels get the fraction of their area inside). Default 1.
        dtype: real float dtype; default float32 (float64 under ``jax_enable_x64``).

    Returns:
        Array ``(n, n)`` of ``dtype``.

    Raises:
        ValueError: if ``n`` or ``supersample`` is not a positive int, or ``dtype`` is not a
            real floating dtype.

    Example:
        >>> disc = ij.phantoms.ellipse(8, 1.0, 0.5, 0.5, 0.0, 0.0, 0.0)
        >>> print(disc.astype(int))
        [[0 0 0 0 0 0 0 0]
         [0 0 0 0 0 0 0 0]
         [0 0 0 1 1 0 0 0]
         [0 0 1 1 1 1 0 0]
         [0 0 1 1 1 1 0 0]
         [0 0 0 1 1 0 0 0]
         [0 0 0 0 0 0 0 0]
         [0 0 0 0 0 0 0 0]]
    """
    n, dtype = _check_size(n), _dtype(dtype)
    params = jnp.stack([jnp.asarray(p, dtype) for p in (intensity, a, b, x0, y0, phi)])
    return _render(n, params[None], supersample, dtype)


def shepp_logan_ellipses(modified: bool = True) -> np.ndarray:
    """The ten ellipses of the Shepp–Logan phantom, array ``(10, 6)`` (float64, NumPy).

    Columns: intensity, semi-axis ``a``, semi-axis ``b``, centre ``x0``, centre ``y0``,
    rotation ``phi`` in radians, in the convention of the module docstring (domain
    ``[-1, 1]^2``, ``y`` up). Geometry from Shepp & Logan (1974) as tabulated by Kak & Slaney
    (1988, Table 3.1); intensities 2, -0.98, -0.02, ... (original, values in ``[0, 2]``) or
    Toft's (1996) modified 1, -0.8, -0.2, ... (values in ``[0, 1]``).

    Arguments:
        modified: Toft's higher-contrast intensities (default) or the original ones.

    Returns:
        NumPy float64 array ``(10, 6)``.

    Example:
        >>> E = ij.phantoms.shepp_logan_ellipses()
        >>> E.shape, E[:2, 0].tolist()
        ((10, 6), [1.0, -0.8])
    """
    intensity = _MODIFIED_INTENSITY if modified else _SHEPP_LOGAN_INTENSITY
    geometry = np.array(_SHEPP_LOGAN_GEOMETRY, dtype=np.float64)
    geometry[:, 4] = np.deg2rad(geometry[:, 4])
    return np.column_stack([np.array(intensity, dtype=np.float64), geometry])


def shepp_logan(n: int, modified: bool = True, dtype=None, *, supersample: int = 1) -> Float[Array, "n n"]:
    """The Shepp–Logan head phantom rasterised at ``n × n``.

    The sum of the ellipses of :func:`shepp_logan_ellipses`, clipped below at 0 (only to
    remove float round-off, e.g. ``1 - 0.8 - 0.2``). Values lie in ``[0, 1]`` for the
    modified phantom and ``[0, 2]`` for the original (whose brain tissue is 1.0–1.03).
    ``skimage.data.shepp_logan_phantom()`` is the modified phantom at 400 × 400.

    Arguments:
        n: image side, pixels (static).
        modified: Toft's high-contrast version (default) or the original of Shepp & Logan.
        dtype: real float dtype; default float32 (float64 under ``jax_enable_x64``).
        supersample: point samples per pixel per axis, averaged (anti-aliasing). Default 1.

    Returns:
        Array ``(n, n)`` of ``dtype``.

    Raises:
        ValueError: if ``n`` or ``supersample`` is not a positive int, or ``dtype`` is not a
            real floating dtype.

    Example:
        >>> x = ij.phantoms.shepp_logan(128, supersample=4)
        >>> x.shape, x.dtype, float(x.min()), float(x.max())
        ((128, 128), dtype('float32'), 0.0, 1.0)
    """
    n, dtype = _check_size(n), _dtype(dtype)
    image = _render(n, shepp_logan_ellipses(modified), supersample, dtype)
    return jnp.maximum(image, 0)


def radon_ellipses(
    ellipses: Real[ArrayLike, "K 6"], angles: Real[ArrayLike, " A"], offsets: Real[ArrayLike, " S"]
) -> Float[Array, "A S"]:
    r"""Exact parallel-beam line integrals of a sum of ellipses.

    The line at angle :math:`\theta` and signed offset :math:`s` is
    :math:`\{(x, y) : x\cos\theta + y\sin\theta = s\}` (its normal makes angle
    :math:`\theta` with the ``x`` axis). For one ellipse with
    :math:`s' = s - x_0\cos\theta - y_0\sin\theta` and
    :math:`\alpha^2 = a^2\cos^2(\theta - \varphi) + b^2\sin^2(\theta - \varphi)`,

    .. math::
        p(\theta, s) = \frac{2\,\rho\, a b}{\alpha^2}\sqrt{\alpha^2 - s'^2}
        \quad\text{for } |s'| < \alpha,\ 0 \text{ otherwise}

    (Kak & Slaney 1988, eq. 3.44), in units where the image domain has side 2; multiply by
    the pixel size's reciprocal ``n / 2`` to compare with a projector that sums pixels.

    Arguments:
        ellipses: ``(K, 6)`` rows ``(intensity, a, b, x0, y0, phi)``, e.g.
            :func:`shepp_logan_ellipses`.
        angles: ``(A,)`` projection angles :math:`\theta`, radians.
        offsets: ``(S,)`` detector offsets :math:`s`.

    Returns:
        Sinogram ``(A, S)`` in the default float dtype, or the dtype of ``angles`` if float.

    Example:
        >>> disc = jnp.array([[1.0, 0.5, 0.5, 0.0, 0.0, 0.0]])       # radius 0.5
        >>> p = ij.phantoms.radon_ellipses(disc, jnp.zeros(1), jnp.array([0.0, 0.3, 0.6]))
        >>> jnp.round(p, 3)                                           # 2 sqrt(0.25 - s^2)
        Array([[1. , 0.8, 0. ]], dtype=float32)
    """
    angles = jnp.asarray(angles)
    dtype = angles.dtype if jnp.issubdtype(angles.dtype, jnp.floating) else jnp.result_type(float)
    angles = angles.astype(dtype)[:, None]
    offsets = jnp.asarray(offsets, dtype)[None, :]
    ellipses = jnp.asarray(ellipses, dtype)

    def one(sino, p):
        rho, a, b, x0, y0, phi = p
        shifted = offsets - x0 * jnp.cos(angles) - y0 * jnp.sin(angles)
        alpha2 = (a * jnp.cos(angles - phi)) ** 2 + (b * jnp.sin(angles - phi)) ** 2
        chord = jnp.sqrt(jnp.maximum(alpha2 - shifted**2, 0))
        return sino + 2 * rho * a * b / alpha2 * chord, None

    sino = jnp.zeros((angles.shape[0], offsets.shape[1]), dtype)
    return jax.lax.scan(one, sino, ellipses)[0]


@functools.partial(
    jax.jit,
    static_argnames=("n", "batch", "max_ellipses", "interior", "supersample", "dtype"),
)
def _random_ellipses(key, n, batch, mean_ellipses, max_ellipses, interior, supersample, dtype):
    # All randomness comes from one flat uniform draw, reshaped: on CPU (JAX 0.10) compiling a
    # threefry draw of shape (2, 8, 86) took ~1 s, the same draw made flat ~0.2 s, and each
    # extra draw site adds its own compile time.
    u = jax.random.uniform(key, (batch * 8 * max_ellipses,), dtype)
    u = u.reshape(batch, 8, max_ellipses)
    # Exact inverse-CDF Poisson count: K = #{k : P(K <= k) < u}, truncated at the cap.
    k = jnp.arange(max_ellipses, dtype=dtype)
    lam = mean_ellipses.astype(dtype)
    log_pmf = k * jnp.log(lam) - lam - jax.lax.lgamma(k + 1)
    cdf = jnp.cumsum(jnp.exp(log_pmf))
    count = jnp.sum(cdf[None, :] < u[:, 7, :1], axis=1)

    def exponential(v):  # mean 1, from v uniform on [0, 1)
        return -jnp.log1p(-v)

    half = 0.5 if interior else 1.0
    intensity = (u[:, 0] - 0.5) * 0.4 * exponential(u[:, 1])
    intensity = jnp.where(jnp.arange(max_ellipses) < count[:, None], intensity, 0)
    params = jnp.stack(
        [
            intensity,
            0.2 * exponential(u[:, 2]),
            0.2 * exponential(u[:, 3]),
            half * (2 * u[:, 4] - 1),
            half * (2 * u[:, 5] - 1),
            2 * jnp.pi * u[:, 6],
        ],
        axis=-1,
    )

    def one(params):
        image = jnp.maximum(_render(n, params, supersample, dtype), 0)
        peak = jnp.max(image)
        return jnp.where(peak > 0, image / jnp.where(peak > 0, peak, 1), 0)

    return jax.vmap(one)(params)


def random_ellipses(
    key: PRNGKeyArray,
    n: int,
    batch: int,
    *,
    mean_ellipses: float = 50.0,
    max_ellipses: int | None = None,
    interior: bool = False,
    supersample: int = 1,
    dtype=None,
) -> Float[Array, "batch n n"]:
    r"""Random-ellipse phantoms, the synthetic training set of learned CT methods.

    Each image sums :math:`K \sim \operatorname{Poisson}(\lambda)` ellipses (capped at
    ``max_ellipses``) with, independently,

    - intensity :math:`(U - \tfrac12)\, E`, :math:`U \sim \mathcal U[0, 1]`, :math:`E` exponential
      with mean 0.4 (so about half the ellipses subtract);
    - semi-axes :math:`a, b` exponential with mean 0.2;
    - centre uniform on :math:`[-1, 1]^2`, or on :math:`[-\tfrac12, \tfrac12]^2` if
      ``interior``;
    - rotation uniform on :math:`[0, 2\pi)`;

    then is clipped below at 0 and divided by its maximum, so values lie in ``[0, 1]`` (an
    image that clips to all zeros stays zero). The distribution follows the ellipse data of
    Adler & Öktem, "Learned Primal-Dual Reconstruction", IEEE TMI 37(6), 2018.

    A pure function of ``key``; compiled once per static setting (``n``, ``batch``, the
    keywords), so calling it repeatedly, or inside ``jax.jit``, is cheap.

    Arguments:
        key: a ``jax.random`` key.
        n: image side, pixels (static).
        batch: number of images (static).
        mean_ellipses: :math:`\lambda`, the mean number of ellipses per image. Default 50.
        max_ellipses: static cap on the number of ellipses (the work per image is
            proportional to it). Default ``ceil(lambda + 5 sqrt(lambda))`` (86 for 50), which
            a Poisson draw exceeds with probability below 1e-5.
        interior: keep centres in the central half of the domain. Default False.
        supersample: point samples per pixel per axis, averaged. Default 1.
        dtype: real float dtype; default float32 (float64 under ``jax_enable_x64``).

    Returns:
        Array ``(batch, n, n)`` of ``dtype`` with values in ``[0, 1]``.

    Raises:
        ValueError: if ``n``, ``batch``, ``max_ellipses`` or ``supersample`` is not a positive
            int, ``mean_ellipses`` is not positive, or ``dtype`` is not a real floating dtype.

    Example:
        >>> x = ij.phantoms.random_ellipses(jax.random.key(0), 32, 4)
        >>> x.shape, bool(x.min() >= 0), bool(x.max() <= 1)
        ((4, 32, 32), True, True)
    """
    n, batch = _check_size(n), _check_size(batch, "batch")
    if not mean_ellipses > 0:
        raise ValueError(f"phantoms: `mean_ellipses` must be positive, got {mean_ellipses}")
    if max_ellipses is None:
        max_ellipses = int(np.ceil(mean_ellipses + 5 * np.sqrt(mean_ellipses)))
    max_ellipses = _check_size(max_ellipses, "max_ellipses")
    supersample = _check_size(supersample, "supersample")
    dtype = _dtype(dtype)
    compute = jnp.promote_types(dtype, jnp.float32)  # draws and geometry in >= float32
    images = _random_ellipses(
        key, n, batch, jnp.asarray(mean_ellipses, compute), max_ellipses, bool(interior),
        supersample, compute,
    )
    return images.astype(dtype)


def _missing(who: str, package: str) -> ImportError:
    return ImportError(
        f"phantoms.{who} needs {package}, which is not installed; "
        "install the demo extra with `pip install invjax[demo]`"
    )


def _finish(image: np.ndarray, n, dtype) -> jax.Array:
    """Scale to ``[0, 1]``, cast, and optionally resize to ``n × n`` (area-weighted linear)."""
    image = image.astype(np.float64)
    low, high = image.min(), image.max()
    image = jnp.asarray((image - low) / (high - low), _dtype(dtype))
    if n is not None:
        n = _check_size(n)
        image = jax.image.resize(image, (n, n), method="linear", antialias=True)
        image = jnp.clip(image, 0, 1)
    return image


def camera(n: int | None = None, dtype=None) -> Float[Array, "h w"]:
    """The "cameraman" photograph bundled with scikit-image, grey levels in ``[0, 1]``.

    Arguments:
        n: if given, resize the 512 × 512 original to ``n × n`` (linear interpolation,
            anti-aliased when shrinking).
        dtype: real float dtype; default float32 (float64 under ``jax_enable_x64``).

    Returns:
        Array ``(512, 512)`` or ``(n, n)`` of ``dtype``.

    Raises:
        ImportError: without scikit-image (``pip install invjax[demo]``).
        ValueError: if ``n`` is not a positive int or ``dtype`` not a real floating dtype.

    Example:
        >>> x = ij.phantoms.camera(64)
        >>> x.shape, float(x.min()) >= 0.0, float(x.max()) <= 1.0
        ((64, 64), True, True)
    """
    try:
        from skimage import data
    except ImportError as err:
        raise _missing("camera", "scikit-image") from err
    return _finish(np.asarray(data.camera()), n, dtype)


def mri_slice(n: int | None = None, dtype=None) -> Float[Array, "h w"]:
    """A sagittal MRI head slice bundled with matplotlib (``s1045.ima.gz``), in ``[0, 1]``.

    The file is a gzipped raw 256 × 256 image of big-endian uint16 (values 0–215: read as
    little-endian, every value would be a multiple of 256), scaled from its range onto
    ``[0, 1]``.

    Arguments:
        n: if given, resize to ``n × n`` (linear interpolation, anti-aliased when shrinking).
        dtype: real float dtype; default float32 (float64 under ``jax_enable_x64``).

    Returns:
        Array ``(256, 256)`` or ``(n, n)`` of ``dtype``.

    Raises:
        ImportError: without matplotlib (``pip install invjax[demo]``).
        FileNotFoundError: if matplotlib's sample file is missing from its installation.
        ValueError: if ``n`` is not a positive int or ``dtype`` not a real floating dtype.

    Example:
        >>> ij.phantoms.mri_slice().shape
        (256, 256)
    """
    try:
        from matplotlib import cbook
    except ImportError as err:
        raise _missing("mri_slice", "matplotlib") from err
    try:
        path = cbook.get_sample_data("s1045.ima.gz", asfileobj=False)
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except OSError as err:
        raise FileNotFoundError(
            "phantoms.mri_slice: matplotlib's sample file s1045.ima.gz is missing from this "
            "installation (it ships with the standard matplotlib wheels)"
        ) from err
    return _finish(np.frombuffer(raw, dtype=">u2").reshape(256, 256), n, dtype)
