"""import_weights: files of each format written here by hand (torch's zip and legacy .pth
layouts as protocol-2 pickles with torch's global names and persistent ids, MatConvNet .mat by
scipy), random weights in the published key layouts, and the imported modules checked against
independent numpy/scipy forward passes; malformed and malicious files rejected by name."""

import collections
import io
import pickle
import struct
import zipfile

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.io
from scipy.signal import convolve2d, correlate2d

from invjax.learned import ConvexRidge, DnCNN, import_weights, read_state_dict


# ---- writing torch files without torch ----------------------------------------------------------
class _G:
    """A global name, written as pickle's GLOBAL opcode (``module\\nname``), as torch's do."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *args):  # pickle's save_reduce wants a callable
        raise AssertionError("never called")


class _Storage:
    def __init__(self, key, flat):
        self.key, self.flat = key, flat


class _Call:
    """An object pickled as ``func(*args)`` (REDUCE)."""

    def __init__(self, func, args):
        self.func, self.args = func, args


_KINDS = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float64): "DoubleStorage",
          np.dtype(np.float16): "HalfStorage", np.dtype(np.int64): "LongStorage"}


class _TorchPickler(pickle._Pickler):
    """Protocol-2 pickles with torch's layout: tensors as ``torch._utils._rebuild_tensor_v2(
    storage, offset, size, stride, False, OrderedDict())``, storages as persistent ids
    ``('storage', torch.<Type>Storage, key, 'cpu', numel[, None])``."""

    dispatch = pickle._Pickler.dispatch.copy()

    def __init__(self, f, storages, legacy=False):
        super().__init__(f, protocol=2)
        self.storages, self.legacy = storages, legacy

    def _save_global_name(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    dispatch[_G] = _save_global_name

    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            record = ("storage", _G("torch", _KINDS[obj.flat.dtype]), obj.key, "cpu", obj.flat.size)
            return record + (None,) if self.legacy else record
        return None

    def reducer_override(self, obj):
        if isinstance(obj, np.ndarray):
            base = obj if obj.base is None else obj.base
            store = self.storages.setdefault(id(base), _Storage(str(len(self.storages)), np.ascontiguousarray(base).ravel()))
            offset = (obj.__array_interface__["data"][0] - base.__array_interface__["data"][0]) // obj.itemsize
            stride = tuple(s // obj.itemsize for s in obj.strides)
            args = (store, offset, tuple(obj.shape), stride, False, collections.OrderedDict())
            return _G("torch._utils", "_rebuild_tensor_v2"), args
        if isinstance(obj, _Call):
            return obj.func, obj.args
        return NotImplemented


def _write_zip(path, obj, *, prefix="archive"):
    storages = {}
    buf = io.BytesIO()
    _TorchPickler(buf, storages).dump(obj)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{prefix}/data.pkl", buf.getvalue())
        z.writestr(f"{prefix}/byteorder", "little")
        for s in storages.values():
            z.writestr(f"{prefix}/data/{s.key}", s.flat.astype(s.flat.dtype.newbyteorder("<")).tobytes())
        z.writestr(f"{prefix}/version", "3\n")
    return path


def _write_legacy(path, obj):
    storages = {}
    buf = io.BytesIO()
    for head in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True,
                                                  "type_sizes": {"short": 2, "int": 4, "long": 4}}):
        pickle.dump(head, buf, protocol=2)
    _TorchPickler(buf, storages, legacy=True).dump(obj)
    pickle.dump([s.key for s in storages.values()], buf, protocol=2)
    for s in storages.values():
        buf.write(struct.pack("<q", s.flat.size) + s.flat.astype("<" + s.flat.dtype.str[1:]).tobytes())
    path.write_bytes(buf.getvalue())
    return path


# ---- independent forward passes ---------------------------------------------------------------------
def _np_conv(x, w, b=None):
    """``(C_in, H, W) -> (C_out, H, W)``: zero-padded 'same' cross-correlation (+ bias), scipy."""
    out = np.stack([sum(correlate2d(x[c], w[o, c], mode="same") for c in range(w.shape[1])) for o in range(w.shape[0])])
    return out if b is None else out + np.asarray(b)[:, None, None]


def _np_net(x, layers):
    """``layers``: ``("conv", w, b)``, ``("bn", g, beta, mean, var, eps)``, ``("relu",)``."""
    for layer in layers:
        if layer[0] == "conv":
            x = _np_conv(x, layer[1], layer[2])
        elif layer[0] == "bn":
            g, beta, mean, var, eps = layer[1:]
            x = (x - mean[:, None, None]) / np.sqrt(var[:, None, None] + eps) * g[:, None, None] + beta[:, None, None]
        else:
            x = np.maximum(x, 0)
    return x


def _rand(rng, *shape, scale=0.3):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def _kair(rng, channels=1, depth=4, width=6):
    """A KAIR-layout state dict (``model.0``, ``model.2``, ...) and its layer list."""
    sd, layers = collections.OrderedDict(), []
    sizes = [channels] + [width] * (depth - 1) + [channels]
    for i in range(depth):
        w, b = _rand(rng, sizes[i + 1], sizes[i], 3, 3), _rand(rng, sizes[i + 1])
        sd[f"model.{2 * i}.weight"], sd[f"model.{2 * i}.bias"] = w, b
        layers += [("conv", w, b)] + ([("relu",)] if i < depth - 1 else [])
    return sd, layers


def _image(rng, channels, h=11, w=9):
    return rng.uniform(0, 1, (channels, h, w)).astype(np.float32)


# ---- DnCNN from torch state dicts ----------------------------------------------------------------
@pytest.mark.parametrize("writer", [_write_zip, _write_legacy])
@pytest.mark.parametrize("channels", [1, 3])
def test_kair_dncnn_equals_numpy_forward(tmp_path, rng, writer, channels):
    sd, layers = _kair(rng, channels)
    path = writer(tmp_path / "dncnn.pth", sd)
    net = import_weights("dncnn", path)
    assert isinstance(net, DnCNN) and net.depth == 4 and net.channels == channels
    y = _image(rng, channels)
    expected = y - _np_net(y, layers)
    np.testing.assert_allclose(net.denoise(y, 0.1), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(net.denoise(y[None], 0.1)[0], expected, rtol=1e-5, atol=1e-5)


def test_read_state_dict_unwraps_and_reads_strided_views(tmp_path, rng):
    w = _rand(rng, 4, 5)
    sd = {"module.a": w.T, "module.b": w[1:3], "module.n": np.arange(3, dtype=np.int64)}  # views of one storage
    for wrapper in ("state_dict", "model"):
        path = _write_zip(tmp_path / f"{wrapper}.pth", {"epoch": 3, wrapper: sd, "note": "x"})
        got = read_state_dict(path)
        assert sorted(got) == ["a", "b", "n"]
        np.testing.assert_array_equal(got["a"], w.T)
        np.testing.assert_array_equal(got["b"], w[1:3])
        assert got["n"].dtype == np.int64


def test_deepinverse_dncnn_output_added_to_input(tmp_path, rng):
    sd, layers = collections.OrderedDict(), []
    names = ["in_conv", "conv_list.0", "conv_list.1", "out_conv"]
    sizes = [1, 5, 5, 5, 1]
    for i, name in enumerate(names):
        w = _rand(rng, sizes[i + 1], sizes[i], 3, 3)
        sd[f"{name}.weight"] = w
        layers += [("conv", w, None)] + ([("relu",)] if i < 3 else [])
    net = import_weights("dncnn", _write_zip(tmp_path / "deepinv.pth", {"state_dict": sd}))
    assert net.biases is None  # bias-free source, bias-free network
    y = _image(rng, 1)
    np.testing.assert_allclose(net.denoise(y[0], 0.1), (y + _np_net(y, layers))[0], rtol=1e-5, atol=1e-5)


def test_batch_norm_folded_into_convolutions(tmp_path, rng):
    # the cszn PyTorch port: conv(bias) relu, [conv(no bias) BN relu] x (depth - 2), conv(no bias)
    eps = 1e-4
    sd, layers = collections.OrderedDict(), []
    w0, b0 = _rand(rng, 6, 1, 3, 3), _rand(rng, 6)
    sd["dncnn.0.weight"], sd["dncnn.0.bias"] = w0, b0
    layers += [("conv", w0, b0), ("relu",)]
    idx = 2
    for _ in range(2):
        w = _rand(rng, 6, 6, 3, 3)
        g, beta, mean = _rand(rng, 6) + 1, _rand(rng, 6), _rand(rng, 6)
        var = rng.uniform(0.5, 2, 6).astype(np.float32)
        sd[f"dncnn.{idx}.weight"] = w
        sd[f"dncnn.{idx + 1}.weight"], sd[f"dncnn.{idx + 1}.bias"] = g, beta
        sd[f"dncnn.{idx + 1}.running_mean"], sd[f"dncnn.{idx + 1}.running_var"] = mean, var
        sd[f"dncnn.{idx + 1}.num_batches_tracked"] = np.array(7, np.int64)
        layers += [("conv", w, None), ("bn", g, beta, mean, var, eps), ("relu",)]
        idx += 3
    wl = _rand(rng, 1, 6, 3, 3)
    sd[f"dncnn.{idx}.weight"] = wl
    layers.append(("conv", wl, None))
    net = import_weights("dncnn", _write_legacy(tmp_path / "bn.pth", sd), bn_eps=eps)
    assert net.depth == 4
    y = _image(rng, 1)
    np.testing.assert_allclose(net.denoise(y[0], 0.1), (y - _np_net(y, layers))[0], rtol=1e-5, atol=1e-5)


# ---- DnCNN from MatConvNet -------------------------------------------------------------------------
def _mat_layer(typ, weights=None, name=""):
    cell = np.empty((1, len(weights or [])), dtype=object)
    for i, w in enumerate(weights or []):
        cell[0, i] = w
    return {"type": typ, "name": name, "weights": cell}


@pytest.mark.parametrize("with_bnorm", [False, True])
def test_matconvnet_dncnn_equals_numpy_forward(tmp_path, rng, with_bnorm):
    sizes = [1, 5, 5, 1]
    mats, layers = [], []
    for i in range(3):
        w = _rand(rng, sizes[i + 1], sizes[i], 3, 3)  # (C_out, C_in, kh, kw)
        b = _rand(rng, sizes[i + 1])
        # MATLAB's (kh, kw, C_in, C_out); the bias as a row
        mats.append(_mat_layer("conv", [w.transpose(2, 3, 1, 0), b[None, :]], f"conv{i}"))
        layers.append(("conv", w, b))
        if with_bnorm and i == 1:
            g, beta, mean = _rand(rng, 5) + 1, _rand(rng, 5), _rand(rng, 5)
            std = rng.uniform(0.5, 2, 5).astype(np.float32)
            mats.append(_mat_layer("bnorm", [g[:, None], beta[:, None], np.stack([mean, std], 1)]))
            layers.append(("bn", g, beta, mean, std**2, 0.0))
        if i < 2:
            mats.append(_mat_layer("relu"))
            layers.append(("relu",))
    cells = np.empty((1, len(mats)), dtype=object)
    for i, m in enumerate(mats):
        cells[0, i] = m
    path = tmp_path / "dncnn.mat"
    scipy.io.savemat(path, {"net": {"layers": cells}})
    net = import_weights("dncnn-matconvnet", path)
    y = _image(rng, 1)
    np.testing.assert_allclose(net.denoise(y[0], 0.1), (y - _np_net(y, layers))[0], rtol=1e-5, atol=1e-5)


# ---- CRR-NN and WCRR-NN ----------------------------------------------------------------------------
def _layers_fwd(x, kernels):
    for k in kernels:
        x = _np_conv(x, k)
    return x


def _layers_adjoint(z, kernels):
    for k in reversed(kernels):
        z = np.stack([sum(convolve2d(z[o], k[o, c], mode="same") for o in range(k.shape[0])) for c in range(k.shape[1])])
    return z


def _np_spline(coeffs, x_min, x_max, t):
    """The authors' linear spline: values at uniform knots, linear beyond them; per channel."""
    m = coeffs.shape[-1]
    step = (x_max - x_min) / (m - 1)
    idx = np.clip(np.floor((t - x_min) / step), 0, m - 2).astype(int)
    frac = (t - x_min) / step - idx
    return np.take_along_axis(coeffs, idx.reshape(len(coeffs), -1), 1).reshape(t.shape) * (1 - frac) + \
        np.take_along_axis(coeffs, idx.reshape(len(coeffs), -1) + 1, 1).reshape(t.shape) * frac


def _crr_checkpoint(rng, channels=(1, 3, 4), k=3, knots=11):
    sd = collections.OrderedDict()
    sd["lmbd"] = np.array(7.0, np.float32)
    sd["mu"] = np.array(1.7, np.float32)
    sd["L"] = np.array(1.0, np.float32)
    for i, (ci, co) in enumerate(zip(channels[:-1], channels[1:])):
        sd[f"conv_layer.conv_layers.{i}.parametrizations.weight.original"] = _rand(rng, co, ci, k, k, scale=1.0)
    grid = np.linspace(-0.1, 0.1, knots)
    # increasing with slopes up to ~3 (above invjax's 1), some decreasing pieces (projected away)
    coeffs = np.cumsum(rng.uniform(-0.01, 0.06, (channels[-1], knots)), axis=1)
    sd["activation.coefficients_vect"] = (coeffs + grid).astype(np.float32).ravel()
    return sd


def test_crr_nn_gradient_equals_the_authors_in_the_interior(tmp_path, rng):
    sd = _crr_checkpoint(rng)
    config = {"sigma": 25, "activation_params": {"knots_range": 0.1, "n_knots": 11}}
    reg = import_weights("crr-nn", _write_zip(tmp_path / "crr.pth", {"epoch": 1, "state_dict": sd, "config": config}))
    assert isinstance(reg, ConvexRidge) and reg.channels == (1, 3, 4) and not reg.weakly_convex
    # the authors: grad R(x) = lmbd W^T sigma(mu W x), every layer zero-mean, monotone projection
    kernels = [sd[f"conv_layer.conv_layers.{i}.parametrizations.weight.original"].astype(np.float64) for i in range(2)]
    kernels = [w - w.mean(axis=(1, 2, 3), keepdims=True) for w in kernels]
    cs = sd["activation.coefficients_vect"].astype(np.float64).reshape(4, 11)
    steps = np.maximum(np.diff(cs, axis=1), 0)
    steps[:, [0, -1]] = 0
    proj = np.concatenate([np.zeros((4, 1)), np.cumsum(steps, axis=1)], axis=1)
    proj -= proj[:, 5:6]
    x = rng.uniform(0, 1, (24, 24))
    z = 1.7 * _layers_fwd(x[None], kernels)
    expected = 7.0 * _layers_adjoint(_np_spline(proj, -0.1, 0.1, z), kernels)[0]
    got = np.asarray(reg.grad(jnp.asarray(x, jnp.float32))) * (25 / 255) ** 2  # sigma_train^2 R = R_authors
    border = 4  # zero padding per layer (theirs) vs circular (invjax): equal beyond twice the filter half-width
    inner = (slice(border, -border),) * 2
    np.testing.assert_allclose(got[inner], expected[inner], rtol=1e-4, atol=1e-5 * np.abs(expected).max())


def test_wcrr_nn_gradient_equals_the_authors_in_the_interior(tmp_path, rng):
    channels, m = (1, 2, 3), 21
    sd = collections.OrderedDict()
    sd["mu_"] = np.array(0.4, np.float32)
    sd["conv_layer.conv_layers.0.parametrizations.weight.original"] = _rand(rng, 2, 1, 3, 3, scale=1.0)
    sd["conv_layer.conv_layers.1.weight"] = _rand(rng, 3, 2, 3, 3, scale=1.0)
    grid = np.linspace(-0.1, 0.1, m)
    sd["activation_cvx.coefficients"] = (grid * 0.8 + 0.02 * np.tanh(40 * grid))[None].astype(np.float32)
    sd["activation_ccv.coefficients"] = (0.05 * np.tanh(30 * grid))[None].astype(np.float32)
    sd["spline_scaling.coefficients"] = (5 + 0.1 * rng.standard_normal((3, 11))).astype(np.float32)
    config = {"spline_activation": {"x_min": -0.1, "x_max": 0.1}, "noise_range": [0, 30], "rho_wcvx": 1}
    sigma = 20 / 255
    reg = import_weights("wcrr-nn", _write_zip(tmp_path / "wcrr.pth", {"state_dict": sd}), sigma=sigma, config=config)
    assert reg.weakly_convex and reg.channels == channels
    # the authors' gradient at noise level sigma: W^T [phi(s W x) / s] with W / sqrt(L)
    k0 = sd["conv_layer.conv_layers.0.parametrizations.weight.original"].astype(np.float64)
    kernels = [k0 - k0.mean(axis=(1, 2, 3), keepdims=True), sd["conv_layer.conv_layers.1.weight"].astype(np.float64)]
    step = 0.2 / (m - 1)

    def project(c):
        s = np.clip(np.diff(c) / step, 0, 1)
        s[[0, -1]] = 0
        cs = np.concatenate([[0.0], np.cumsum(s) * step])
        return 0.5 * (cs - cs[::-1])

    phi = np.exp(0.4) * project(sd["activation_cvx.coefficients"][0].astype(np.float64)) - project(
        sd["activation_ccv.coefficients"][0].astype(np.float64)
    )
    s255 = sigma * 255
    scaling = np.exp(_np_spline(sd["spline_scaling.coefficients"].astype(np.float64), 0, 30, np.full((3, 1), s255)))[:, 0]
    scaling /= s255 + 1e-5
    dirac = np.zeros((1, 9, 9))
    dirac[0, 4, 4] = 1
    wtw = _layers_adjoint(_layers_fwd(dirac, kernels), kernels)[0]  # as their spectral_norm("Fourier")
    n = 255 + 2 * 2 - 1 + 1  # their padding: (sn_size - 1) // 2 - P on each side of the 4P + 1 kernel
    lip = np.abs(np.fft.fft2(np.pad(wtw, (n - 9) // 2))).max()
    x = rng.uniform(0, 1, (24, 24))
    z = _layers_fwd(x[None], kernels) / np.sqrt(lip) * scaling[:, None, None]
    act = _np_spline(np.tile(phi, (3, 1)), -0.1, 0.1, z) / scaling[:, None, None]
    expected = _layers_adjoint(act, kernels)[0] / np.sqrt(lip)
    got = np.asarray(reg.grad(jnp.asarray(x, jnp.float32))) * sigma**2
    inner = (slice(4, -4),) * 2
    np.testing.assert_allclose(got[inner], expected[inner], rtol=1e-4, atol=1e-5 * np.abs(expected).max())


# ---- errors ------------------------------------------------------------------------------------------
def test_shape_that_does_not_fit_is_named(tmp_path, rng):
    sd, _ = _kair(rng, 1, depth=4, width=6)
    sd["model.4.weight"] = _rand(rng, 6, 5, 3, 3)
    path = _write_zip(tmp_path / "bad.pth", sd)
    with pytest.raises(ValueError, match=r"'model\.4\.weight' has shape \(6, 5, 3, 3\) where the network expects \(6, 6, 3, 3\)"):
        import_weights("dncnn", path)


def test_noise_map_network_is_not_a_residual_dncnn(tmp_path, rng):
    sd, _ = _kair(rng, 1, depth=3, width=4)
    sd["model.0.weight"] = _rand(rng, 4, 2, 3, 3)  # FDnCNN: image + noise map in, one channel out
    with pytest.raises(ValueError, match=r"'model\.4\.weight' has shape \(1, 4, 3, 3\) where the network expects \(2, 4, 3, 3\).*FDnCNN"):
        import_weights("dncnn", _write_zip(tmp_path / "fdncnn.pth", sd))


def test_unexpected_key_is_named(tmp_path, rng):
    sd, _ = _kair(rng)
    sd["head.weight"] = _rand(rng, 2)
    with pytest.raises(ValueError, match=r"unexpected key 'head\.weight'"):
        import_weights("dncnn", _write_zip(tmp_path / "x.pth", sd))


@pytest.mark.parametrize("writer", [_write_zip, _write_legacy])
def test_malicious_global_is_refused_by_name(tmp_path, rng, writer):
    payload = {"model.0.weight": _rand(rng, 1, 1, 3, 3), "x": _Call(_G("os", "system"), ("echo pwned > pwned",))}
    path = writer(tmp_path / "evil.pth", payload)
    with pytest.raises(ValueError, match=r"refers to the global 'os\.system'.*refused"):
        import_weights("dncnn", path)
    assert not (tmp_path / "pwned").exists()


def test_whole_pickled_model_is_refused(tmp_path, rng):
    model = _Call(_G("__main__", "DnCNN"), ())
    with pytest.raises(ValueError, match=r"'__main__\.DnCNN'.*model\.state_dict\(\)"):
        read_state_dict(_write_zip(tmp_path / "model.pth", {"model": model}))


@pytest.mark.parametrize("writer", [_write_zip, _write_legacy])
def test_truncated_file_names_the_file(tmp_path, rng, writer):
    sd, _ = _kair(rng)
    path = writer(tmp_path / "cut.pth", sd)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ValueError, match=r"cut\.pth' is truncated or corrupted"):
        import_weights("dncnn", path)


def test_other_mistakes(tmp_path, rng):
    sd, _ = _kair(rng)
    path = _write_zip(tmp_path / "ok.pth", sd)
    with pytest.raises(ValueError, match="`kind` must be one of"):
        import_weights("unet", path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        import_weights("dncnn", tmp_path / "missing.pth")
    (tmp_path / "text.pth").write_text("hello")
    with pytest.raises(ValueError, match="not a torch checkpoint"):
        import_weights("dncnn", tmp_path / "text.pth")
    wcrr = _write_zip(tmp_path / "wcrr.pth", {"mu_": np.array(0.0, np.float32)})
    with pytest.raises(TypeError, match="needs sigma="):
        import_weights("wcrr-nn", wcrr)
    crr = _write_zip(tmp_path / "crr.pth", _crr_checkpoint(rng))
    with pytest.raises(ValueError, match="training noise level .* unknown"):
        import_weights("crr-nn", crr)
    with pytest.raises(ValueError, match=r"`sigma` must be in \(0, 1\]"):
        import_weights("crr-nn", crr, sigma=25)


def test_tensor_reaching_past_its_storage_is_refused(tmp_path):
    # a record whose size and stride would read past the storage (never viewed: checked first)
    store = _Storage("0", np.arange(4, dtype=np.float32))
    tensor = _Call(_G("torch._utils", "_rebuild_tensor_v2"), (store, 0, (3,), (2,), False, collections.OrderedDict()))
    buf = io.BytesIO()
    _TorchPickler(buf, {id(store): store}).dump({"w": tensor})
    path = tmp_path / "strided.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        z.writestr("archive/data/0", store.flat.tobytes())
    with pytest.raises(ValueError, match=r"strided\.pth' is truncated or corrupted: a tensor of shape \(3,\) needs element 4"):
        read_state_dict(path)


# ---- DRUNet ------------------------------------------------------------------------------------------
def _np_drunet(x, sigma, sd, nb):
    """KAIR's UNetRes forward in numpy/scipy on one (C, H, W) image (H, W multiples of 8)."""
    def res(x, base, i):
        return x + _np_conv(np.maximum(_np_conv(x, sd[f"{base}.{i}.res.0.weight"]), 0), sd[f"{base}.{i}.res.2.weight"])

    def down(x, w):  # Conv2d(kernel 2, stride 2, padding 0)
        return np.stack([sum(correlate2d(x[c], w[o, c], mode="valid")[::2, ::2] for c in range(x.shape[0]))
                         for o in range(w.shape[0])])

    def up(x, w):  # ConvTranspose2d(kernel 2, stride 2, padding 0), weight (C_in, C_out, 2, 2)
        out = np.zeros((w.shape[1], 2 * x.shape[1], 2 * x.shape[2]))
        for a in range(2):
            for b in range(2):
                out[:, a::2, b::2] = np.einsum("chw,co->ohw", x, w[:, :, a, b])
        return out

    x1 = _np_conv(np.concatenate([x, np.full((1,) + x.shape[1:], sigma)]), sd["m_head.weight"])
    skips, h = [x1], x1
    for lvl in (1, 2, 3):
        for i in range(nb):
            h = res(h, f"m_down{lvl}", i)
        h = down(h, sd[f"m_down{lvl}.{nb}.weight"])
        skips.append(h)
    for i in range(nb):
        h = res(h, "m_body", i)
    for lvl, skip in zip((3, 2, 1), reversed(skips[1:])):
        h = up(h + skip, sd[f"m_up{lvl}.0.weight"])
        for i in range(1, nb + 1):
            h = res(h, f"m_up{lvl}", i)
    return _np_conv(h + x1, sd["m_tail.weight"])


def _drunet_state(rng, channels=1, widths=(4, 6, 8, 8), nb=1):
    from invjax.learned.zoo import _drunet_keys

    shapes = [(widths[0], channels + 1, 3, 3)]
    for lvl in range(3):
        shapes += [(widths[lvl], widths[lvl], 3, 3)] * (2 * nb) + [(widths[lvl + 1], widths[lvl], 2, 2)]
    shapes += [(widths[3], widths[3], 3, 3)] * (2 * nb)
    for lvl in (2, 1, 0):
        shapes += [(widths[lvl + 1], widths[lvl], 2, 2)] + [(widths[lvl], widths[lvl], 3, 3)] * (2 * nb)
    shapes.append((channels, widths[0], 3, 3))
    return collections.OrderedDict((k, _rand(rng, *s)) for k, s in zip(_drunet_keys(nb), shapes))


@pytest.mark.parametrize("channels,shape", [(1, (16, 24)), (3, (13, 11))])
def test_drunet_equals_numpy_forward(tmp_path, rng, channels, shape):
    from invjax.learned import DRUNet

    sd = _drunet_state(rng, channels)
    net = import_weights("drunet", _write_zip(tmp_path / "drunet.pth", sd))
    assert isinstance(net, DRUNet) and net.channels == channels
    y = rng.uniform(0, 1, (channels,) + shape).astype(np.float32)
    h, w = shape
    padded = np.pad(y, ((0, 0), (0, -h % 8), (0, -w % 8)), mode="edge")  # KAIR's test-time padding
    expected = _np_drunet(padded.astype(np.float64), 0.1, {k: v.astype(np.float64) for k, v in sd.items()}, 1)[:, :h, :w]
    got = net.denoise(y[0] if channels == 1 else y, 0.1)
    np.testing.assert_allclose(np.reshape(got, expected.shape), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_drunet_with_biases_is_named(tmp_path, rng):
    sd = _drunet_state(rng)
    sd["m_head.bias"] = _rand(rng, 4)
    with pytest.raises(ValueError, match=r"unexpected key 'm_head\.bias'.*no biases"):
        import_weights("drunet", _write_zip(tmp_path / "b.pth", sd))
    sd = _drunet_state(rng)
    sd["m_up2.0.weight"] = _rand(rng, 8, 5, 2, 2)
    with pytest.raises(ValueError, match=r"'m_up2\.0\.weight' has shape \(8, 5, 2, 2\) where the network expects \(8, 6, 2, 2\)"):
        import_weights("drunet", _write_zip(tmp_path / "s.pth", sd))
