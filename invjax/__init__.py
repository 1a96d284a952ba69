"""invjax: differentiable inverse problems in JAX."""

from . import operators

__version__ = "0.1.0"

__all__ = ["operators"]
