"""The registry (tests/registry.py) covers every public name of operators, functionals and solvers."""

import inspect

import pytest

import invjax as ij
from tests import registry


def _covered(names, entries, exempt):
    missing = []
    for name in names:
        if name in exempt:
            continue
        if not any(key == name or key.startswith(name + "-") for key in entries):
            missing.append(name)
    return missing


@pytest.mark.parametrize(
    "module,entries,exempt",
    [
        (ij.operators, registry.OPERATORS, registry.OPERATOR_EXEMPT),
        (ij.functionals, registry.FUNCTIONALS, registry.FUNCTIONAL_EXEMPT),
        (ij.solvers, registry.SOLVERS, registry.SOLVER_EXEMPT),
    ],
    ids=["operators", "functionals", "solvers"],
)
def test_registry_covers_all_public_names(module, entries, exempt):
    assert _covered(module.__all__, entries, exempt) == []
    # no stale exemptions
    assert set(exempt) <= set(module.__all__)


def test_registered_entries_build_instances_of_the_public_classes():
    import numpy as np

    rng = np.random.default_rng(0)
    for name, make in registry.OPERATORS.items():
        op = make(rng)
        assert isinstance(op, ij.operators.LinearOperator), name
    for name, case in registry.FUNCTIONALS.items():
        assert isinstance(case.make(rng, (4, 3)), ij.functionals.Functional), name
    for name, make in registry.SOLVERS.items():
        solver = make()
        assert type(solver).__name__ == name and isinstance(solver, ij.solvers.IterativeSolver)
        assert not inspect.isabstract(type(solver))
    # every solver named by a matrix case exists
    for case in registry.REGULARIZERS.values():
        assert set(case.solvers) <= set(registry.SOLVERS)
