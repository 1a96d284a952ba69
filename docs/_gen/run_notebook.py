"""Run a percent-format notebook cell by cell; print one JSON line with each code cell's output.

    python docs/_gen/run_notebook.py notebooks/01_deblurring_automatic_weight.py

The cells run in one namespace, as the script would (``__name__ == "__main__"``); what each
prints is captured, and the matplotlib figures open after it are saved as PNG and closed. A
cell that raises prints its traceback on stderr and exits 1. The last line of stdout is
``{"cells": [{"stdout": ..., "images": [base64 png, ...]}, ...], "cpu_s": ...}``.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from notebooks import parse  # noqa: E402


def _figures() -> list[str]:
    if "matplotlib.pyplot" not in sys.modules:
        return []
    plt = sys.modules["matplotlib.pyplot"]
    images = []
    for number in plt.get_fignums():
        buffer = io.BytesIO()
        plt.figure(number).savefig(buffer, format="png", dpi=90, bbox_inches="tight")
        images.append(base64.b64encode(buffer.getvalue()).decode())
    plt.close("all")
    return images


def main(path: str) -> int:
    start = time.process_time()
    namespace = {"__name__": "__main__", "__file__": str(Path(path).resolve())}
    cells = []
    for index, (kind, source) in enumerate(parse(Path(path))):
        if kind != "code":
            continue
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                exec(compile(source, f"{path}, cell {len(cells) + 1}", "exec"), namespace)  # noqa: S102
        except BaseException:  # noqa: BLE001 (reported, and the run fails)
            sys.stderr.write(out.getvalue())
            traceback.print_exc()
            return 1
        cells.append({"stdout": out.getvalue(), "images": _figures()})
    print(json.dumps({"cells": cells, "cpu_s": time.process_time() - start}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
