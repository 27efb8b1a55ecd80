"""Execute the documentation notebooks (jupytext Markdown files in ``docs/notebooks/``).

    python docs/run_notebooks.py                # small size: what the test suite runs
    python docs/run_notebooks.py --full         # full size: the published numbers and plots
    python docs/run_notebooks.py --full bnn_with_eki classification   # a subset

Each ``docs/notebooks/<name>.md`` is converted with jupytext and executed top to bottom with
nbclient in a kernel running *this* Python interpreter (a temporary kernelspec, so nothing has to
be installed with ``jupyter kernelspec``). The size is passed to the notebook through the
environment variable ``EKIBNN_DOCS_SIZE`` (``small`` or ``full``). Executed notebooks are written
to ``docs/_build/notebooks/<name>.ipynb`` (git-ignored).

``tests/test_notebooks.py`` runs this script in a subprocess, one notebook per test (so the
Jupyter machinery's sockets and warnings stay out of the test process).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

DOCS = Path(__file__).resolve().parent
NOTEBOOKS = DOCS / "notebooks"
BUILD = DOCS / "_build" / "notebooks"
KERNEL_NAME = "ekibnn-docs"
_CPU_PROBE = (
    "import resource as _r\n_u = _r.getrusage(_r.RUSAGE_SELF)\nprint(_u.ru_utime + _u.ru_stime)"
)


def notebook_paths() -> list[Path]:
    """The jupytext notebooks, sorted by name."""
    return sorted(NOTEBOOKS.glob("*.md"))


@contextlib.contextmanager
def _kernel_manager(env: dict[str, str]) -> Iterator[object]:
    """A KernelManager for a temporary kernelspec that runs ``sys.executable``."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    with tempfile.TemporaryDirectory(prefix="ekibnn-kernel-") as tmp:
        spec_dir = Path(tmp) / "kernels" / KERNEL_NAME
        spec_dir.mkdir(parents=True)
        spec = {
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "ekibnn docs (this interpreter)",
            "language": "python",
            "env": env,
        }
        (spec_dir / "kernel.json").write_text(json.dumps(spec))
        ksm = KernelSpecManager(kernel_dirs=[str(spec_dir.parent)])
        yield KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=ksm)


def _drop_kernel_noise(nb) -> None:
    """Remove the kernel's own log lines (e.g. ipykernel's transport notice) from the outputs."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.outputs = [
            out
            for out in cell.get("outputs", [])
            if not (
                out.get("output_type") == "stream"
                and out.get("name") == "stderr"
                and "[IPKernelApp]" in out.get("text", "")
            )
        ]


def execute_notebook(
    path: str | os.PathLike,
    size: str = "small",
    cell_timeout: int = 300,
    out_path: str | os.PathLike | None = None,
    cwd: str | os.PathLike | None = None,
):
    """Convert the jupytext Markdown notebook ``path`` and execute every cell.

    Args:
        path: a ``.md`` jupytext notebook.
        size: ``"small"`` or ``"full"`` (exported as ``EKIBNN_DOCS_SIZE`` to the kernel).
        cell_timeout: seconds a single cell may run before execution fails.
        out_path: if given, the executed notebook is written there as ``.ipynb``.
        cwd: working directory of the kernel (default: a temporary directory).

    Returns:
        The executed ``nbformat`` notebook; ``nb.metadata["ekibnn"]["kernel_cpu_s"]`` is the
        CPU time (user + system, all threads) the kernel process used.

    Raises:
        nbclient.exceptions.CellExecutionError: if a cell fails.
        nbclient.exceptions.CellTimeoutError: if a cell runs longer than ``cell_timeout``.
    """
    import jupytext
    import nbformat
    from nbclient import NotebookClient

    if size not in ("small", "full"):
        raise ValueError(f"size: expected 'small' or 'full'; got {size!r}")
    nb = jupytext.read(path)
    # A last cell reports the kernel's CPU time; it is removed again before returning.
    nb.cells.append(nbformat.v4.new_code_cell(_CPU_PROBE))
    env = {"EKIBNN_DOCS_SIZE": size, "PYTHONWARNINGS": "ignore"}
    with contextlib.ExitStack() as stack:
        if cwd is None:
            cwd = stack.enter_context(tempfile.TemporaryDirectory(prefix="ekibnn-nb-"))
        km = stack.enter_context(_kernel_manager(env))
        client = NotebookClient(
            nb,
            km=km,
            timeout=cell_timeout,
            allow_errors=False,
            resources={"metadata": {"path": str(cwd)}},
        )
        client.execute()
    probe = nb.cells.pop()
    cpu = float("".join(o.get("text", "") for o in probe.outputs if o.get("name") == "stdout"))
    nb.metadata["ekibnn"] = {"size": size, "kernel_cpu_s": round(cpu, 1)}
    _drop_kernel_noise(nb)
    if out_path is not None:
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, out_path)
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="notebook names (default: all)")
    parser.add_argument("--full", action="store_true", help="full size (default: small)")
    parser.add_argument("--timeout", type=int, default=None, help="seconds per cell")
    parser.add_argument(
        "--out-dir", type=Path, default=BUILD, help=f"where executed notebooks go ({BUILD})"
    )
    args = parser.parse_args(argv)
    size = "full" if args.full else "small"
    timeout = args.timeout or (3600 if args.full else 300)
    paths = notebook_paths()
    if args.names:
        wanted = {n.removesuffix(".md") for n in args.names}
        paths = [p for p in paths if p.stem in wanted]
        missing = wanted - {p.stem for p in paths}
        if missing:
            parser.error(f"no such notebook(s): {sorted(missing)}")
    for path in paths:
        start = time.perf_counter()
        out = args.out_dir / f"{path.stem}.ipynb"
        nb = execute_notebook(path, size=size, cell_timeout=timeout, out_path=out)
        cpu = nb.metadata["ekibnn"]["kernel_cpu_s"]
        wall = time.perf_counter() - start
        print(f"{path.name}: {wall:.1f} s wall, kernel CPU {cpu:.1f} s -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
