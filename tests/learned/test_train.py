"""Training data and the training loop: image loading and patches, a small DnCNN that learns
to denoise, bit-identical resume after a stop or a kill mid-write, and progress without tqdm."""

import functools
import importlib
import os
import subprocess
import sys
import textwrap
import types

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from invjax.learned.training.data import BUNDLED, load_images, patch_data, patches, split, stack
from invjax.learned.networks.dncnn import DnCNN
from invjax.learned.training import CHECKPOINT_NAME, denoising_loss, denoising_validation, train

# the module (a package __init__ that re-exports the function `train` would shadow the name)
train_mod = importlib.import_module("invjax.learned.training.loop")


# ---- data ------------------------------------------------------------------------------------------
def test_load_images_from_a_folder_in_name_order(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (12, 10), dtype=np.uint8)
    rgb = rng.integers(0, 256, (8, 9, 3), dtype=np.uint8)
    deep = rng.integers(0, 65536, (7, 6), dtype=np.uint16)
    Image.fromarray(gray).save(tmp_path / "b_gray.png")
    Image.fromarray(rgb).save(tmp_path / "a_rgb.png")
    Image.fromarray(deep).save(tmp_path / "c_16bit.png")
    (tmp_path / "notes.txt").write_text("not an image")
    images, names = load_images(tmp_path, with_names=True)
    assert names == ["a_rgb.png", "b_gray.png", "c_16bit.png"]
    assert all(im.dtype == np.float32 and im.ndim == 2 for im in images)
    np.testing.assert_allclose(images[0], rgb @ np.array([0.299, 0.587, 0.114]) / 255, atol=1e-6)
    np.testing.assert_allclose(images[1], gray / 255, atol=1e-7)
    np.testing.assert_allclose(images[2], deep / 65535, atol=1e-7)
    train_set, held = split(images, held_out=1)
    assert len(train_set) == 2 and held[0] is images[2]  # the last by file name is held out
    with pytest.raises(FileNotFoundError, match="no images"):
        load_images(_empty(tmp_path))
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        load_images(tmp_path / "missing")


def _empty(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    return d


def test_bundled_images_and_split_rules():
    import skimage.data

    images, names = load_images(names=("camera", "coins"), with_names=True)
    assert names == ["camera", "coins"]
    np.testing.assert_allclose(images[0], skimage.data.camera() / 255, atol=1e-7)
    assert BUNDLED[0] == "camera"
    assert [len(p) for p in split(list(range(10)), 0.2)] == [8, 2]
    with pytest.raises(ValueError, match=r"`held_out` must leave at least one image"):
        split([1, 2], held_out=2)
    with pytest.raises(ValueError, match="bundled"):
        load_images(names=("astronaut",))


def _dihedral(a):
    return [np.rot90(b, k) for b in (a, a.T) for k in range(4)]


def test_patches_are_flipped_windows_and_a_pure_function_of_the_key():
    # images whose every window is unique, of different sizes
    img_a = np.arange(20 * 24, dtype=np.float32).reshape(20, 24) / 1000
    img_b = 1 + np.arange(15 * 13, dtype=np.float32).reshape(15, 13) / 1000
    stacked = stack([img_a, img_b])
    size = 5
    batch = patches(jax.random.PRNGKey(3), stacked, size, 64)
    assert batch.shape == (64, size, size) and batch.dtype == jnp.float32
    np.testing.assert_array_equal(batch, patches(jax.random.PRNGKey(3), [img_a, img_b], size, 64))
    assert not np.array_equal(batch, patches(jax.random.PRNGKey(4), stacked, size, 64))
    seen = set()
    for p in np.asarray(batch):
        img = img_a if p.min() < 1 else img_b
        found = None
        for t, q in enumerate(_dihedral(p)):  # undo the symmetry: q must be a window of img
            i, j = np.argwhere(img == q[0, 0])[0]
            fits = i + size <= img.shape[0] and j + size <= img.shape[1]
            if fits and np.array_equal(img[i : i + size, j : j + size], q):
                found = t
                break
        assert found is not None
        seen.add(found)
    assert len(seen) == 8  # all symmetries of the square occur
    with pytest.raises(ValueError, match=r"`size` must be at most the smallest image side 13, got 14"):
        patches(jax.random.PRNGKey(0), stacked, 14, 2)


# ---- training ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def camera_split():
    cam = load_images(names=("camera",))[0]
    return cam[:, :384], cam[192:320, 384:]  # train on the left, hold out a 128x128 on the right


@pytest.mark.slow  # a few seconds of compilation; kept out of the 10-minute default run
def test_tiny_dncnn_learns_to_denoise_camera(camera_split):
    train_img, held = camera_split
    sigma = 0.1
    net = DnCNN(depth=3, width=8, key=jax.random.PRNGKey(0))
    validate = denoising_validation([held], sigma, key=jax.random.PRNGKey(5))
    net, hist = train(
        net, denoising_loss(sigma), patch_data([train_img], 32, 16), optax.adam(1e-2), 60,
        key=jax.random.PRNGKey(1), validate=validate, validate_every=30, progress=False,
    )  # fmt: skip
    assert hist.loss.shape == (60,) and np.all(np.isfinite(hist.loss))
    assert hist.loss[-10:].mean() < 0.5 * hist.loss[:10].mean()
    assert list(hist.validation_steps) == [30, 60]
    gain = hist.validation[-1] - validate.noisy_psnr
    assert gain > 2.0, (validate.noisy_psnr, hist.validation)


@functools.cache  # the same loss and optimizer objects: later runs reuse the compiled step
def _tiny_setup():
    net = DnCNN(depth=2, width=4, noise_level_input=True, key=jax.random.PRNGKey(0))
    images = [np.asarray(jax.random.uniform(jax.random.PRNGKey(9), (40, 40)))]
    return net, denoising_loss((0.05, 0.2)), patch_data(images, 12, 4), optax.adam(3e-3)


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(eqx.filter(tree, eqx.is_array))]


def _bit_equal(a, b):
    la, lb = _leaves(a), _leaves(b)
    return len(la) == len(lb) and all(x.dtype == y.dtype and x.tobytes() == y.tobytes() for x, y in zip(la, lb))


@pytest.fixture(scope="module")
def reference_run():
    net, loss, data, opt = _tiny_setup()
    return train(net, loss, data, opt, 12, key=jax.random.PRNGKey(2), progress=False)


def test_resume_after_a_stop_is_bit_identical(tmp_path, reference_run):
    ref_model, ref_hist = reference_run
    net, loss, data, opt = _tiny_setup()
    args = dict(key=jax.random.PRNGKey(2), checkpoint_dir=tmp_path, checkpoint_every=2, progress=False)
    part, hist5 = train(net, loss, data, opt, 5, **args)
    assert (tmp_path / CHECKPOINT_NAME).exists() and len(hist5.loss) == 5
    assert not _bit_equal(part, ref_model)
    # a new call with the same arguments and the full number of steps continues from step 5
    model, hist = train(net, loss, data, opt, 12, **args)
    assert _bit_equal(model, ref_model)
    np.testing.assert_array_equal(hist.loss, ref_hist.loss)
    # and a finished run resumes to itself without training
    again, hist_again = train(net, loss, data, opt, 12, **args)
    assert _bit_equal(again, ref_model) and len(hist_again.loss) == 12


def test_resume_after_an_interrupted_run_is_bit_identical(tmp_path, reference_run):
    ref_model, ref_hist = reference_run
    net, loss, data, opt = _tiny_setup()

    def dying(key, step):
        if step == 7:
            raise KeyboardInterrupt("killed during step 7")  # the last checkpoint is at step 6
        return data(key, step)

    args = dict(key=jax.random.PRNGKey(2), checkpoint_dir=tmp_path, checkpoint_every=3, progress=False)
    with pytest.raises(KeyboardInterrupt, match=r"^killed during step 7$"):  # ours, unwrapped
        train(net, loss, dying, opt, 12, **args)
    model, hist = train(net, loss, data, opt, 12, **args)
    assert _bit_equal(model, ref_model)
    np.testing.assert_array_equal(hist.loss, ref_hist.loss)


def test_a_kill_mid_write_leaves_the_last_good_checkpoint(tmp_path, reference_run, monkeypatch):
    ref_model, _ = reference_run
    net, loss, data, opt = _tiny_setup()
    args = dict(key=jax.random.PRNGKey(2), checkpoint_dir=tmp_path, checkpoint_every=2, progress=False)
    # the second checkpoint (step 4) dies between writing its temporary file and renaming it
    real_replace, calls = os.replace, []

    def killed(src, dst):
        calls.append(src)
        if len(calls) == 2:
            raise SystemExit("killed")
        real_replace(src, dst)

    monkeypatch.setattr(train_mod.os, "replace", killed)
    with pytest.raises(SystemExit, match=r"^killed$"):
        train(net, loss, data, opt, 12, **args)
    monkeypatch.setattr(train_mod.os, "replace", real_replace)
    # a real kill leaves the partial temporary file behind: put a truncated one back
    leftover = tmp_path / f".{CHECKPOINT_NAME}.tmp-424242"
    leftover.write_bytes((tmp_path / CHECKPOINT_NAME).read_bytes()[:100])
    model, hist = train(net, loss, data, opt, 12, **args)
    assert not leftover.exists()
    assert _bit_equal(model, ref_model)  # resumed from step 2, the last complete checkpoint
    # a kill before the first checkpoint completed: only a temporary file, a fresh start
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / f".{CHECKPOINT_NAME}.tmp-1").write_bytes(b"partial")
    model, _ = train(net, loss, data, opt, 12, **{**args, "checkpoint_dir": fresh})
    assert _bit_equal(model, ref_model)


def test_checkpoint_of_another_model_is_a_clear_error(tmp_path):
    net, loss, data, opt = _tiny_setup()
    train(net, loss, data, opt, 1, key=jax.random.PRNGKey(2), checkpoint_dir=tmp_path, progress=False)
    other = DnCNN(depth=2, width=5, noise_level_input=True, key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="does not match the model and optimizer given"):
        train(other, loss, data, opt, 2, key=jax.random.PRNGKey(2), checkpoint_dir=tmp_path, progress=False)
    with pytest.warns(UserWarning, match="with its own key, which differs from `key`"):
        train(net, loss, data, opt, 1, key=jax.random.PRNGKey(3), checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"`steps` must be an int >= 0, got -1"):
        train(net, loss, data, opt, -1, key=jax.random.PRNGKey(2))


class _Bound(eqx.Module):
    """A minimal reconstruction model bound to an operator: x = scale * A^H y."""

    op: object
    scale: jax.Array

    def __call__(self, y):
        return self.scale * jnp.real(self.op.T(y))


def test_operator_arrays_are_not_trained_by_default():
    # an MRI mask held by the model is data: with weight decay, training it would shrink it
    # towards 0 (zero gradient, decayed all the same); the default filter_spec leaves it alone
    import invjax as ij

    mask = (np.random.default_rng(0).random((8, 8)) > 0.5).astype(np.float32)
    model = _Bound(ij.operators.CartesianMRI(mask), jnp.asarray(0.5, jnp.float32))
    images = jnp.asarray(np.random.default_rng(1).random((2, 8, 8)), jnp.float32)
    loss = ij.learned.supervised_loss(model.op, noise=0.01)
    opt = optax.adamw(1e-2, weight_decay=0.5)
    data = lambda key, step: images  # noqa: E731

    trained, hist = train(model, loss, data, opt, 3, key=jax.random.PRNGKey(0), progress=False)
    np.testing.assert_array_equal(np.asarray(trained.op.mask), mask)  # bit for bit
    assert float(trained.scale) != 0.5 and hist.loss[-1] < hist.loss[0]
    assert [bool(b) for b in jax.tree.leaves(ij.learned.trainable(model))] == [False, True]
    # asking for every inexact array trains the mask too: it is no longer the sampling pattern
    everything, _ = train(model, loss, data, opt, 3, key=jax.random.PRNGKey(0), progress=False,
                          filter_spec=eqx.is_inexact_array)
    assert np.abs(np.asarray(everything.op.mask) - mask).max() > 1e-3
    with pytest.raises(TypeError, match=r"train: `filter_spec` must be a callable leaf -> bool or a pytree prefix"):
        train(model, loss, data, opt, 1, key=jax.random.PRNGKey(0), progress=False, filter_spec=(True, False, True))


def test_typed_keys_resume_and_progress_with_and_without_tqdm(tmp_path, monkeypatch):
    net, loss, data, opt = _tiny_setup()
    bars = []

    class FakeBar:
        def __init__(self, **kwargs):
            self.kwargs, self.posts, self.n = kwargs, [], kwargs.get("initial", 0)
            bars.append(self)

        def set_postfix(self, post, refresh=True):
            self.posts.append(dict(post))

        def update(self, n):
            self.n += n

        def close(self):
            pass

    fake = types.ModuleType("tqdm.auto")
    fake.tqdm = FakeBar
    monkeypatch.setitem(sys.modules, "tqdm", types.ModuleType("tqdm"))
    monkeypatch.setitem(sys.modules, "tqdm.auto", fake)
    key = jax.random.key(2)
    validate = lambda m: 1.5  # noqa: E731
    args = dict(key=key, checkpoint_dir=tmp_path, checkpoint_every=2, validate=validate)
    train(net, loss, data, opt, 3, **args)
    assert bars[0].n == 3 and "loss" in bars[0].posts[-1] and bars[0].posts[-1]["val"] == "1.5"
    # without tqdm: no bar, no error; the typed key resumes from the checkpoint at step 3
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    model, hist = train(net, loss, data, opt, 4, **args)
    assert len(bars) == 1 and len(hist.loss) == 4 and list(hist.validation_steps) == [2, 3, 4]
    ref, _ = train(net, loss, data, opt, 4, key=key, progress=False)
    assert _bit_equal(model, ref)


@pytest.mark.slow
def test_data_parallel_over_two_host_devices_matches_one_device(tmp_path):
    """Two CPU devices (a fresh process): the batch is sharded, the result agrees to rounding."""
    script = textwrap.dedent(
        """
        import os, sys
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=" + sys.argv[1]
        import jax, numpy as np, optax
        from invjax.learned.training.data import patch_data
        from invjax.learned.networks.dncnn import DnCNN
        from invjax.learned.training import denoising_loss, train
        assert len(jax.devices()) == int(sys.argv[1])
        net = DnCNN(depth=2, width=4, key=jax.random.PRNGKey(0))
        data = patch_data([np.asarray(jax.random.uniform(jax.random.PRNGKey(9), (40, 40)))], 12, 4)
        key = jax.random.PRNGKey(2)
        net, hist = train(net, denoising_loss(0.1), data, optax.adam(3e-3), 5, key=key, progress=False)
        np.save(sys.argv[2], np.concatenate([np.ravel(w) for w in net.weights] + [hist.loss]))
        """
    )
    (tmp_path / "run.py").write_text(script)
    outs = []
    for n in (1, 2):
        out = tmp_path / f"out{n}.npy"
        env = {**os.environ, "PYTHONPATH": os.getcwd()}
        subprocess.run([sys.executable, str(tmp_path / "run.py"), str(n), str(out)], check=True, env=env, timeout=300)
        outs.append(np.load(out))
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-4, atol=1e-6)
