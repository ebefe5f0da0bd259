"""Sync each chapter's jupytext source into its notebook and execute it under JAX.

The .md files (MyST) are what people edit; the .ipynb beside each is what
Jupyter opens and nbval re-runs. This writes the notebooks with their outputs,
so a reader browsing the repository sees every figure without running anything.

Usage::

    python tools/build_chapters.py                       # every chapter, both languages
    python tools/build_chapters.py chapters/ko/01_elbo.md

Prints the seconds each notebook took to execute.
"""

import argparse
import os
import pathlib
import re
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "chapters"
BACKEND = "jax"  # the committed outputs come from one backend; nbval re-runs the others
CELL_TIMEOUT = 600
# TensorFlow's C++ start-up log (absl), printed when a JAX kernel's Keras imports TensorFlow
# for a utility. It lands on stderr only on some machines and backends, so nbval, which does
# not compare stderr under other backends, would report it as a missing output.
STARTUP_LOG = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWE]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] .*)$"
)


def chapter_sources():
    return sorted(p for lang in ("en", "ko") for p in (CHAPTERS / lang).glob("[0-9][0-9]_*.md"))


def sync(md_path):
    """Update the .ipynb's inputs from the .md, keeping any outputs it has."""
    subprocess.run(
        [sys.executable, "-m", "jupytext", "--quiet", "--to", "ipynb", "--update", str(md_path)],
        check=True,
    )


def execute(ipynb_path):
    import nbclient
    import nbformat

    notebook = nbformat.read(ipynb_path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        record_timing=False,
        resources={"metadata": {"path": str(ipynb_path.parent)}},
    )
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = [output for output in cell.outputs if not is_startup_log(output)]
    nbformat.write(notebook, ipynb_path)
    return seconds


def is_startup_log(output):
    """Whether a cell output is only TensorFlow's start-up log on stderr."""
    if output.get("output_type") != "stream" or output.get("name") != "stderr":
        return False
    lines = [line for line in output.get("text", "").splitlines() if line.strip()]
    return bool(lines) and all(STARTUP_LOG.match(line) for line in lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="*", type=pathlib.Path, help="chapter .md files")
    args = parser.parse_args()
    sources = [p.resolve() for p in args.sources] or chapter_sources()
    missing = [str(p) for p in sources if p.suffix != ".md" or not p.exists()]
    if missing:
        parser.error(f"expected existing chapter .md files, got {missing}")
    os.environ["KERAS_BACKEND"] = BACKEND  # the kernels inherit it
    for md_path in sources:
        sync(md_path)
        seconds = execute(md_path.with_suffix(".ipynb"))
        print(f"{seconds:6.1f} s  {md_path.relative_to(ROOT)}  ({BACKEND})", flush=True)


if __name__ == "__main__":
    main()
