"""invjax imports from any working directory, including one that holds a clone named ``invjax/``.

A clone of this repository is a folder ``invjax/`` without ``__init__.py`` (the package is
``invjax/invjax/``). Python started from the folder above it puts that folder first on ``sys.path``;
with setuptools' default editable install (an import hook consulted after ``sys.path``) the clone
becomes an empty namespace package and ``invjax.phantoms`` fails. The README installs with
``--config-settings editable_mode=compat`` (a ``.pth`` entry), which this test holds it to: CI runs
the README's test command in a fresh clone and venv, so the environment here is the README's.
"""

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "invjax"

PROBE = (
    "import invjax, json; "
    "print(json.dumps({'file': invjax.__file__, 'phantom': list(invjax.phantoms.shepp_logan(8).shape)}))"
)


def _editable() -> bool:
    text = metadata.distribution("invjax").read_text("direct_url.json")
    return bool(text) and json.loads(text).get("dir_info", {}).get("editable", False)


def test_import_from_a_folder_holding_a_clone_named_invjax(tmp_path):
    (tmp_path / "invjax").mkdir()  # what `git clone ... invjax` leaves at the top: no __init__.py
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env=env)
    assert proc.returncode == 0, (
        "`import invjax; invjax.phantoms` failed from a folder holding a directory named invjax/; install as "
        "the README says (pip install -e '.[test]' --config-settings editable_mode=compat):\n" + proc.stderr[-2000:]
    )
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["phantom"] == [8, 8]
    if _editable():  # an editable install must import this very checkout, not a namespace or another copy
        assert Path(found["file"]).resolve() == PACKAGE / "__init__.py"
