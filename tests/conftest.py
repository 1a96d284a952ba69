import contextlib
import os

# The suite compiles hundreds of small programs and runs each for milliseconds: LLVM's
# optimisation passes cost more than they save (measured: solver compiles 35-45 % faster).
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import jax
import numpy as np
import pytest


@contextlib.contextmanager
def x64_enabled(enabled: bool = True):
    """Enable (``enabled=False``: disable) float64 in JAX for the duration of the block, then
    restore the old setting."""
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", enabled)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", old)


@pytest.fixture
def x64():
    with x64_enabled():
        yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)
