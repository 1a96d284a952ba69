"""Saving and loading learned models, the shipped pretrained ones, and the shared
``denoise(y, sigma)`` contract (one image or a batch) against per-image calls."""

import json
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import invjax as ij
from invjax.learned import ConvexRidge, DnCNN
from tests.registry import OPERATORS, random_input

SHIPPED = ("crr-nn", "dncnn", "ffdnet", "wcrr-nn")
ALL_SHIPPED = ("crr-nn", "dncnn", "ffdnet", "lpd-ct64", "wcrr-nn")


def _ridge():
    m = ConvexRidge(key=jax.random.key(0), channels=(1, 2, 4), kernel_size=3, knots=7, strength=30.0,
                    noise_calibration=((0.05, 0.8), (0.1, 1.2)))
    rng = np.random.default_rng(0)
    return eqx.tree_at(lambda t: t.spline.raw_slopes, m, jnp.asarray(rng.uniform(0, 1, m.spline.raw_slopes.shape), jnp.float32))


def _dncnn():
    return DnCNN(depth=3, width=4, noise_level_input=True, key=jax.random.key(1))


def _images(n=3, size=12):
    return np.random.default_rng(2).uniform(0, 1, (n, size, size)).astype(np.float32)


@pytest.mark.parametrize("make", [_ridge, _dncnn], ids=["ridge", "dncnn"])
def test_save_load_round_trip(tmp_path, make):
    model = make()
    path = ij.learned.save(tmp_path / "m", model, {"steps": 3})
    assert path == tmp_path / "m.eqx" and (tmp_path / "m.json").exists()
    back = ij.learned.load(tmp_path / "m.eqx")
    assert type(back) is type(model)
    for a, b in zip(jax.tree.leaves(model), jax.tree.leaves(back)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    y = _images(1)[0]
    np.testing.assert_array_equal(np.asarray(back.denoise(y, 0.07)), np.asarray(model.denoise(y, 0.07)))
    assert json.loads((tmp_path / "m.json").read_text())["metadata"] == {"steps": 3}


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no saved model"):
        ij.learned.load(tmp_path / "missing")
    ij.learned.save(tmp_path / "m", _dncnn())
    good = (tmp_path / "m.eqx").read_bytes()
    (tmp_path / "m.eqx").write_bytes(good[: len(good) // 2])  # truncated: caught by the hash
    with pytest.raises(ValueError, match=r"m\.eqx' is corrupted or was modified: expected sha256"):
        ij.learned.load(tmp_path / "m")
    (tmp_path / "m.eqx").write_bytes(good)
    text = (tmp_path / "m.json").read_text()
    record = json.loads(text)
    first = record["structure"]["fields"]["weights"]["tuple"][0]
    assert first == {"array": "float32[4,2,3,3]"}
    first["array"] = "float32[5,2,3,3]"  # a structure the (intact) weights do not fit
    (tmp_path / "m.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"weights in .*m\.eqx' are corrupt or do not fit the invjax\.learned\.DnCNN"):
        ij.learned.load(tmp_path / "m")
    record["structure"]["module"] = "os.system"  # never imported nor called
    (tmp_path / "m.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"m\.json' does not describe a model.*'os\.system', which is not an equinox"):
        ij.learned.load(tmp_path / "m")
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"m\.json' is not a saved model description"):
        ij.learned.load(tmp_path / "m")
    with pytest.raises(TypeError, match="`model` must be an equinox module built from invjax classes"):
        ij.learned.save(tmp_path / "x", object())
    with pytest.raises(ValueError, match=r"`name` must be one of \("):
        ij.learned.pretrained("no-such-model")


def test_a_mismatched_pair_of_files_is_refused(tmp_path):
    """The .eqx of one model beside the .json of another (an interrupted save, files copied
    by hand): the hash says so before anything is deserialised."""
    ij.learned.save(tmp_path / "a", _dncnn())
    ij.learned.save(tmp_path / "b", _ridge())
    (tmp_path / "a.eqx").write_bytes((tmp_path / "b.eqx").read_bytes())
    with pytest.raises(ValueError, match=r"a\.eqx' is corrupted or was modified: expected sha256 [0-9a-f]{64} "
                                         r"\(recorded in '.*a\.json'\), got [0-9a-f]{64}"):
        ij.learned.load(tmp_path / "a")


def _corrupt_middle(path, n=64, seed=0):
    """Overwrite ``n`` random bytes in the middle of ``path``; returns the bytes before."""
    good = path.read_bytes()
    mid = len(good) // 2
    bad = bytearray(good)
    bad[mid : mid + n] = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()
    assert bytes(bad) != good
    path.write_bytes(bytes(bad))
    return good


def test_corrupted_bytes_in_a_user_save_are_an_error(tmp_path):
    model = _dncnn()
    ij.learned.save(tmp_path / "m", model)
    _corrupt_middle(tmp_path / "m.eqx")
    # without the hash the damage goes unnoticed: the bytes still deserialise into the structure
    damaged = eqx.tree_deserialise_leaves(tmp_path / "m.eqx", model)
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(damaged), jax.tree.leaves(model)))
    with pytest.raises(ValueError, match=r"m\.eqx' is corrupted or was modified: expected sha256 [0-9a-f]{64} .* got "):
        ij.learned.load(tmp_path / "m")


def test_old_format_without_hash_loads_with_a_warning(tmp_path):
    """Format 1 (constructor arguments, no hash), as written before the hash: it loads, the
    same model, with a warning that it cannot be checked; saving it again adds the hash."""
    model = jax.tree.map(lambda a: a + 0.01, _dncnn())
    eqx.tree_serialise_leaves(tmp_path / "old.eqx", model)
    config = {"channels": 1, "depth": 3, "width": 4, "noise_level_input": True, "spectral_norm": False,
              "lipschitz": 1.0, "bias": True, "power_iters": 30, "spectral_grid": 16, "dtype": "float32"}
    (tmp_path / "old.json").write_text(json.dumps({"format": 1, "class": "DnCNN", "config": config, "metadata": {}}))
    with pytest.warns(UserWarning, match=r"old\.json' records no sha256 .* cannot be checked"):
        back = ij.learned.load(tmp_path / "old")
    assert bool(eqx.tree_equal(back, model))
    ij.learned.save(tmp_path / "old", back)
    assert json.loads((tmp_path / "old.json").read_text())["format"] == 2
    assert bool(eqx.tree_equal(ij.learned.load(tmp_path / "old"), model))


# ---- a round trip of every kind of model the library trains, bound to every kind of operator -----
def _perturbed(model, seed=0):
    """Every float leaf moved off its initial value (zero biases would round-trip trivially)."""
    rng = np.random.default_rng(seed)

    def move(a):
        if not (eqx.is_array(a) and jnp.issubdtype(a.dtype, jnp.inexact)):
            return a
        return jnp.asarray(np.asarray(a) + 0.01 * rng.standard_normal(a.shape), a.dtype)  # numpy: no compiles

    return jax.tree.map(move, model)


def _random_model(build, seed=0):
    """``build()``'s structure with random leaves from numpy, without running its initialisers
    (their compilations dominated these tests); eagerly where the constructor needs concrete values."""
    try:
        skeleton = eqx.filter_eval_shape(build)
    except Exception:  # noqa: BLE001
        return _perturbed(build(), seed)
    rng = np.random.default_rng(seed)

    def fill(a):
        if not isinstance(a, jax.ShapeDtypeStruct):
            return a
        x = 0.1 * rng.standard_normal(a.shape)
        if jnp.issubdtype(a.dtype, jnp.complexfloating):
            x = x + 0.1j * rng.standard_normal(a.shape)
        return jnp.asarray(x, a.dtype)

    return jax.tree.map(fill, skeleton)


def _mri(coils):
    rng = np.random.default_rng(3)
    mask = rng.random((8, 8)) > 0.5
    sens = None if coils is None else rng.standard_normal((coils, 8, 8)) + 1j * rng.standard_normal((coils, 8, 8))
    return ij.operators.CartesianMRI(mask, sens, centered=coils is not None)


def _psf():
    return np.outer([1.0, 2.0, 1.0], [1.0, 2.0, 1.0]) / 16


_K = jax.random.key(4)
_CT = lambda: ij.operators.ParallelBeam2D((8, 8), np.linspace(0, np.pi, 5, endpoint=False))  # noqa: E731
_IMG = np.random.default_rng(5).uniform(0, 1, (8, 8)).astype(np.float32)
MODELS = {  # name: (build, apply)
    "crr": (lambda: _ridge(), lambda m: m.denoise(_IMG, 0.07)),
    "wcrr": (lambda: ConvexRidge(key=_K, channels=(1, 2, 4), kernel_size=3, knots=7, weakly_convex=True),
             lambda m: (m(_IMG), m.denoise(_IMG, 0.05))),
    "dncnn": (lambda: _dncnn(), lambda m: m.denoise(_IMG, 0.1)),
    "dncnn-blind-sn": (lambda: DnCNN(depth=2, width=3, spectral_norm=True, lipschitz=0.9, key=_K), lambda m: m(_IMG)),
    "ffdnet": (lambda: ij.learned.FFDNet(depth=2, width=4, key=_K), lambda m: m.denoise(_IMG, 0.1)),
    "lpd-ct": (lambda: ij.learned.LearnedPrimalDual(_CT(), iterations=2, width=4, op_norm=2.0, key=_K),
               lambda m: m(m.op(_IMG))),
    "lpd-mri": (lambda: ij.learned.LearnedPrimalDual(_mri(None), iterations=2, width=4, op_norm=2.0, key=_K),
                lambda m: m(m.op(_IMG))),
    "modl-single-coil": (lambda: ij.learned.MoDL(_mri(None), iterations=2, cg_iters=3, depth=2, width=4, key=_K),
                         lambda m: m(m.op(_IMG))),
    "modl-multi-coil": (lambda: ij.learned.MoDL(_mri(3), iterations=2, cg_iters=3, depth=2, width=4, key=_K),
                        lambda m: m(m.op(_IMG))),
    "deq-convolution": (lambda: ij.learned.DEQ(ij.operators.Convolution(_psf(), (8, 8)), width=4, depth=2, op_norm=2.0, key=_K),
                        lambda m: m(m.op(_IMG))),
    "deq-mask": (lambda: ij.learned.DEQ(ij.operators.Mask(_IMG > 0.3), width=4, depth=2, init="zeros", op_norm=1.0, key=_K),
                 lambda m: m(m.op(_IMG))),
    "deq-downsample": (lambda: ij.learned.DEQ(ij.operators.Downsample((8, 8), 2), width=4, depth=2, op_norm=2.0, key=_K),
                       lambda m: m(m.op(_IMG))),
    "deq-ct": (lambda: ij.learned.DEQ(_CT(), width=4, depth=2, max_iters=20, op_norm=8.0, key=_K), lambda m: m(m.op(_IMG))),
    "drunet": (lambda: ij.learned.DRUNet(widths=(2, 2, 2, 2), blocks=1, key=_K), lambda m: m.denoise(_IMG, 0.1)),
    "lpd-convolution": (lambda: ij.learned.LearnedPrimalDual(ij.operators.Convolution(_psf(), (8, 8)), iterations=2,
                                                             width=4, op_norm=1.0, key=_K), lambda m: m(m.op(_IMG))),
    "lpd-mask": (lambda: ij.learned.LearnedPrimalDual(ij.operators.Mask(_IMG > 0.3), iterations=2, width=4, op_norm=1.0,
                                                      key=_K), lambda m: m(m.op(_IMG))),
    "modl-convolution": (lambda: ij.learned.MoDL(ij.operators.Convolution(_psf(), (8, 8)), iterations=2, cg_iters=3,
                                                 depth=2, width=4, key=_K), lambda m: m(m.op(_IMG))),
    "modl-ct": (lambda: ij.learned.MoDL(_CT(), iterations=2, cg_iters=3, depth=2, width=4, key=_K), lambda m: m(m.op(_IMG))),
}


# each kind once in the default suite; the other operators and variants (the CT-bound LPD is also
# test_unrolled's round trip) in the slow one: building the networks compiles their initialisers
SLOW_KINDS = {"dncnn-blind-sn", "lpd-ct", "modl-single-coil", "deq-convolution", "deq-downsample", "lpd-convolution",
              "modl-convolution", "modl-ct"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_KINDS else n for n in MODELS])
def test_save_load_round_trips_every_model_kind(tmp_path, name):
    build, apply = MODELS[name]
    model = _random_model(build)
    ij.learned.save(tmp_path / name, model, {"kind": name})
    back = ij.learned.load(tmp_path / name)
    assert type(back) is type(model)
    assert bool(eqx.tree_equal(back, model))  # same structure, statics, and leaves bit for bit
    static = eqx.partition(back, eqx.is_array)[1]
    assert static == eqx.partition(model, eqx.is_array)[1] and hash(static) == hash(eqx.partition(model, eqx.is_array)[1])
    traces = []
    run = eqx.filter_jit(lambda m: (traces.append(m), apply(m))[1])
    for a, b in zip(jax.tree.leaves(run(model)), jax.tree.leaves(run(back))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert len(traces) == 1  # one compilation served both: their static halves are equal and hashable


def test_a_file_naming_a_module_of_the_flat_layout_still_loads(tmp_path):
    """learned/ was split by role (priors/, networks/, training/, zoo.py): a file that names a class
    by its module path before the split (``invjax.learned.dncnn.DnCNN``) loads as the same class."""
    model = _random_model(_dncnn)
    ij.learned.save(tmp_path / "m", model)
    record = json.loads((tmp_path / "m.json").read_text())
    assert record["structure"]["module"] == "invjax.learned.DnCNN"
    record["structure"]["module"] = "invjax.learned.dncnn.DnCNN"  # the JSON is not hashed, the leaves are
    (tmp_path / "m.json").write_text(json.dumps(record))
    back = ij.learned.load(tmp_path / "m")
    assert type(back) is DnCNN and bool(eqx.tree_equal(back, model))
    record["structure"]["module"] = "invjax.learned.dncnn.NoSuchNet"
    (tmp_path / "m.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"names class 'invjax.learned.dncnn.NoSuchNet'"):
        ij.learned.load(tmp_path / "m")


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_every_registered_operator_round_trips(tmp_path, name):
    """A saved network's operator is rebuilt from its static fields (shape, angles, ...) and its
    arrays (mask, coil maps, PSF) come back from the .eqx; here each operator alone. Its static
    metadata is hashable and it jits as a plain jax.jit argument."""
    op = OPERATORS[name](np.random.default_rng(0))
    ij.learned.save(tmp_path / "op", op)
    back = ij.learned.load(tmp_path / "op")
    assert type(back) is type(op) and bool(eqx.tree_equal(back, op))
    hash(eqx.partition(back, eqx.is_array)[1])
    x = random_input(np.random.default_rng(1), op.in_shape, op.dtype, jnp.issubdtype(op.dtype, jnp.complexfloating))
    np.testing.assert_array_equal(np.asarray(jax.jit(lambda A, v: A(v))(back, x)), np.asarray(jax.jit(lambda A, v: A(v))(op, x)))


def test_save_refuses_what_json_cannot_describe(tmp_path):
    op = ij.operators.Convolution(_psf(), (8, 8))
    deq = _random_model(lambda: ij.learned.DEQ(op, width=3, depth=2, init=lambda A, y: A.T(y), op_norm=2.0, key=_K))
    with pytest.raises(TypeError, match=r"save: `DEQ\.init` is a builtins\.function, which cannot be described"):
        ij.learned.save(tmp_path / "deq", deq)

    class Mine(eqx.Module):
        w: jax.Array

    with pytest.raises(TypeError, match=r"save: `Mine` is a .*Mine; only modules built from invjax"):
        ij.learned.save(tmp_path / "mine", Mine(jnp.ones(2)))
    assert not (tmp_path / "deq.eqx").exists() and not (tmp_path / "mine.json").exists()


@pytest.mark.parametrize("make", [_ridge, _dncnn], ids=["ridge", "dncnn"])
def test_denoise_batches_like_single_images(make):
    """A batch with one sigma or one per image equals the per-image calls; jit and vmap agree."""
    model = make()
    ys = _images()
    sigmas = np.array([0.03, 0.06, 0.1], np.float32)
    batch = np.asarray(model.denoise(ys, sigmas))
    singles = np.stack([np.asarray(model.denoise(y, s)) for y, s in zip(ys, sigmas)])
    np.testing.assert_allclose(batch, singles, rtol=1e-5, atol=1e-6)
    one = np.asarray(model.denoise(ys, 0.06))
    np.testing.assert_allclose(one[1], singles[1], rtol=1e-5, atol=1e-6)
    jitted = eqx.filter_jit(lambda m, y, s: m.denoise(y, s))(model, ys, sigmas)
    np.testing.assert_allclose(np.asarray(jitted), singles, rtol=1e-5, atol=1e-6)
    mapped = jax.vmap(model.denoise)(ys, sigmas)
    np.testing.assert_allclose(np.asarray(mapped), singles, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"`sigma` must be finite and > 0"):
        model.denoise(ys, np.array([0.1, 0.0, 0.1]))
    with pytest.raises(ValueError, match=r"`y` must have shape \(H, W\), \(B, H, W\)"):
        model.denoise(ys[None, None], 0.1)


def test_ridge_calibration_interpolates_in_log_sigma():
    m = _ridge()
    np.testing.assert_allclose(float(m.calibration_factor(0.01)), 0.8)  # held beyond the ends
    np.testing.assert_allclose(float(m.calibration_factor(0.5)), 1.2)
    mid = np.sqrt(0.05 * 0.1)  # halfway in log sigma
    np.testing.assert_allclose(float(m.calibration_factor(mid)), 1.0, rtol=1e-6)
    y = _images(1)[0]
    np.testing.assert_allclose(np.asarray(m.denoise(y, mid)), np.asarray(m.prox(y, mid**2)), rtol=1e-5, atol=1e-6)


# ---- the shipped models ------------------------------------------------------------------------------
def test_shipped_models_are_listed_documented_and_load():
    assert set(SHIPPED) <= set(ij.learned.available())
    for name in SHIPPED:
        info = ij.learned.metadata(name)
        assert "python benchmarks/train_denoisers.py" in info["command"]
        assert info["steps"] > 0 and info["wall_s"] > 0 and info["machine"]
    m = ij.learned.pretrained("crr-nn")
    assert isinstance(m, ConvexRidge) and not m.weakly_convex
    assert ij.learned.pretrained("wcrr-nn").weakly_convex
    assert isinstance(ij.learned.pretrained("dncnn"), DnCNN)


@pytest.mark.slow  # ~20 s for the three models; the default suite is near its 10-minute budget
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_denoisers_denoise_a_natural_image(name):
    """On scikit-image's camera (not in the training folder) at sigma = 25/255, every shipped
    denoiser gains at least 5 dB over the noisy input (their held-out means are in the README)."""
    from skimage import data

    x = np.asarray(data.camera()[128:256, 128:256], np.float32) / 255
    sigma = 25 / 255
    y = x + sigma * np.random.default_rng(0).standard_normal(x.shape).astype(np.float32)
    out = np.asarray(ij.learned.pretrained(name).denoise(y, sigma))
    gain = ij.metrics.psnr(out, x, data_range=1.0) - ij.metrics.psnr(y, x, data_range=1.0)
    assert float(gain) > 5.0


@pytest.mark.parametrize("name", ["crr-nn", "wcrr-nn"])
def test_shipped_ridges_convexity_on_random_segments(name):
    """R(t x + (1 - t) z) <= t R(x) + (1 - t) R(z) (+ the weak-convexity allowance
    rho t (1 - t) ||x - z||^2 / 2 for WCRR-NN, with rho the model's stated modulus) on random
    segments between natural-image crops and noisy copies."""
    from skimage import data

    m = ij.learned.pretrained(name)
    rho = float(m.weak_convexity)
    img = np.asarray(data.camera(), np.float32) / 255
    rng = np.random.default_rng(1)
    for i in range(24):
        r, c = rng.integers(0, 512 - 48, 2)
        x = img[r : r + 48, c : c + 48]
        z = x + rng.uniform(0.02, 0.3) * rng.standard_normal(x.shape).astype(np.float32)
        t = rng.uniform(0.1, 0.9)
        lhs = float(m(t * x + (1 - t) * z))
        rhs = t * float(m(x)) + (1 - t) * float(m(z))
        allowance = rho * t * (1 - t) * float(np.sum((x - z) ** 2)) / 2
        assert lhs <= rhs + allowance + 1e-4 * abs(rhs), (i, lhs, rhs, allowance)
    if name == "crr-nn":
        assert rho == 0.0
    else:
        assert rho > 0


def test_shipped_files_carry_their_sha256():
    """Each shipped .json records the SHA-256 of its .eqx (recomputed here independently)."""
    import hashlib

    assert set(ij.learned.available()) == set(ALL_SHIPPED)
    folder = Path(ij.learned.__file__).parent / "weights"
    for name in ALL_SHIPPED:
        record = json.loads((folder / f"{name}.json").read_text())
        assert record["format"] == 2
        assert record["sha256"] == hashlib.sha256((folder / f"{name}.eqx").read_bytes()).hexdigest(), name


@pytest.mark.parametrize("name", ALL_SHIPPED)
def test_a_corrupted_copy_of_a_shipped_file_is_an_error(tmp_path, name):
    import shutil

    folder = Path(ij.learned.__file__).parent / "weights"
    for ext in (".eqx", ".json"):
        shutil.copy(folder / f"{name}{ext}", tmp_path / f"{name}{ext}")
    ij.learned.load(tmp_path / name)  # the intact copy loads
    _corrupt_middle(tmp_path / f"{name}.eqx", seed=len(name))
    with pytest.raises(ValueError, match=rf"{name}\.eqx' is corrupted or was modified: expected sha256 [0-9a-f]{{64}}"):
        ij.learned.load(tmp_path / name)


def test_loading_runs_no_constructor(monkeypatch):
    """load rebuilds the skeleton from the JSON alone: no random initialisation, no power
    iteration for op_norm (what made lpd-ct64 take 10 s to build)."""

    def refuse(*args, **kwargs):
        raise AssertionError("a constructor ran during load")

    for cls in (ij.learned.LearnedPrimalDual, ij.operators.ParallelBeam2D, ConvexRidge, DnCNN):
        monkeypatch.setattr(cls, "__init__", refuse)
    for name in ALL_SHIPPED:
        model = ij.learned.pretrained(name)  # a constructor call would raise AssertionError here
        arrays = [leaf for leaf in jax.tree.leaves(model) if isinstance(leaf, jax.Array)]
        assert arrays and all(bool(jnp.all(jnp.isfinite(a))) for a in arrays), name


def _shipped_input(model):
    rng = np.random.default_rng(7)
    if isinstance(model, ij.learned.LearnedPrimalDual):
        x = ij.phantoms.shepp_logan(64)
        return model.op(x) + 0.05 * jnp.asarray(rng.standard_normal(model.op.out_shape), jnp.float32)
    return jnp.asarray(rng.uniform(0, 1, (2, 24, 24)), jnp.float32)


@pytest.mark.parametrize("name", ["crr-nn", "dncnn", "wcrr-nn", pytest.param("lpd-ct64", marks=pytest.mark.slow)])
def test_shipped_models_under_plain_jax_jit(name):
    """The model as an argument of a plain jax.jit function (and, for lpd-ct64, closed over)
    gives the eager output. (jax.jit(model) itself is refused by equinox for any module holding
    arrays: see pretrained's docstring; eqx.filter_jit: test_denoise_batches_like_single_images.)
    lpd-ct64 is slow: its eager call alone takes seconds."""
    model = ij.learned.pretrained(name)
    y = _shipped_input(model)
    hash(eqx.partition(model, eqx.is_array)[1])  # static metadata hashable: compilations are cached
    if isinstance(model, ij.learned.LearnedPrimalDual):
        eager = model(y)
        outs = [jax.jit(lambda m, v: m(v))(model, y), jax.jit(lambda v: model(v))(y)]
    else:
        sigma = 25 / 255
        eager = model.denoise(y, sigma)
        outs = [jax.jit(lambda m, v, s: m.denoise(v, s))(model, y, sigma)]
    assert eager.shape == (64, 64) if name == "lpd-ct64" else eager.shape == y.shape
    for out in outs:
        np.testing.assert_allclose(np.asarray(out), np.asarray(eager), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["crr-nn", "dncnn"])
def test_negative_sigma_under_jit_names_sigma(name):
    """A traced sigma <= 0 fails at run time with the message (equinox.error_if): in the text of
    the JaxRuntimeError under jax.jit, as the EquinoxRuntimeError's message under filter_jit."""
    model = ij.learned.pretrained(name)
    y = _shipped_input(model)[0]
    with pytest.raises(RuntimeError, match=r"denoise: `sigma` must be finite and > 0"):
        np.asarray(jax.jit(lambda v, s: model.denoise(v, s))(y, -0.1))
    if name == "dncnn":  # the same check, the cleaner error of eqx.filter_jit
        with pytest.raises(eqx.EquinoxRuntimeError, match=r"denoise: `sigma` must be finite and > 0"):
            np.asarray(eqx.filter_jit(lambda v, s: model.denoise(v, s))(y, -0.1))
