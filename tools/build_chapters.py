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
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "chapters"
BACKEND = "jax"  # the committed outputs come from one backend; nbval re-runs the others
CELL_TIMEOUT = 600


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
    nbformat.write(notebook, ipynb_path)
    return seconds


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
