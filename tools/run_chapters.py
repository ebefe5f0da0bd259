"""Run chapter notebooks under any backend and seeds, checking their claims, not their text.

nbval compares each cell's text with the committed output (seed 0, JAX). A claim
is about the method, so it must also hold for every other seed and on every
backend; the printed numbers then change, so this runs each notebook top to
bottom in a fresh kernel with ``KERAS_BACKEND`` and ``KVAE_SEED`` set and fails
only when a cell raises (a claim that does not hold, or any error). Nothing is
written back to the notebooks.

Usage::

    python tools/run_chapters.py --backend torch --seeds 1 2          # every chapter, en and ko
    python tools/run_chapters.py --backend jax --seeds 5 --lang ko
    python tools/run_chapters.py --backend tensorflow chapters/en/03_kl_divergence.ipynb
    python tools/run_chapters.py --seeds-from-commit 2                # seeds nobody picked
    python tools/run_chapters.py --print-seeds 2                      # just print those seeds

Prints one line per notebook and seed, then ``N passed, N failed``; exits 1 if any failed.
"""

import argparse
import concurrent.futures
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "chapters"
BACKENDS = ("tensorflow", "jax", "torch")
LANGUAGES = ("en", "ko")
CELL_TIMEOUT = 600
SEED_RANGE = 10_000  # seeds derived from a commit lie in 1..SEED_RANGE


def find_notebooks(languages):
    return [p for lang in languages for p in sorted((CHAPTERS / lang).glob("[0-9][0-9]_*.ipynb"))]


def seeds_from_commit(count):
    """``count`` seeds in 1..SEED_RANGE read from the current commit's hash: nobody picks them,
    and the same commit always gets the same ones, so a failure can be re-run."""
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    return [1 + int(head[8 * i : 8 * i + 8], 16) % SEED_RANGE for i in range(count)]


def run_one(notebook, backend, seed, threads):
    """Execute one notebook in a fresh kernel; return (seconds, claims checked, error or None)."""
    import nbclient
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:  # the committed outputs must not count as this run's
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    env = {**os.environ, "KERAS_BACKEND": backend, "KVAE_SEED": str(seed), "MPLBACKEND": "Agg"}
    # Kernels that run side by side each get their share of the cores: PyTorch's OpenMP threads,
    # one per core in every kernel, would otherwise contend, and a chapter runs many times slower.
    env.setdefault("OMP_NUM_THREADS", str(threads))
    client = nbclient.NotebookClient(
        nb, timeout=CELL_TIMEOUT, kernel_name="python3",
        resources={"metadata": {"path": str(notebook.parent)}},
    )  # fmt: skip
    running = [nb.cells[0]]
    client.on_cell_start = lambda cell, cell_index: running.append(cell)  # where a failure stopped
    start = time.perf_counter()
    error = None
    try:
        client.execute(env=env)
    except nbclient.exceptions.CellExecutionError as failure:
        error = f"{failure.ename}: {_first_line(failure.evalue)}"
    except (nbclient.exceptions.CellTimeoutError, nbclient.exceptions.DeadKernelError) as failure:
        error = f"{type(failure).__name__}: {_first_line(str(failure))}"
    if error:
        error += f" (in {_first_line(running[-1].source)[:70]!r})"
    return time.perf_counter() - start, _claims_checked(nb), error


def _first_line(text):
    lines = [line for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else ""


def _claims_checked(nb):
    count = 0
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stdout":
                count += sum(line.startswith("✓ ") for line in output["text"].splitlines())
    return count


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=pathlib.Path, help="chapter .ipynb files")
    parser.add_argument("--backend", choices=BACKENDS, default="jax")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", type=int, nargs="+", default=[0], help="KVAE_SEED values")
    seeds.add_argument("--seeds-from-commit", type=int, metavar="N", help="N seeds from HEAD")
    seeds.add_argument("--print-seeds", type=int, metavar="N", help="print N seeds from HEAD")
    parser.add_argument("--lang", choices=LANGUAGES, nargs="+", default=list(LANGUAGES))
    parser.add_argument("--jobs", type=int, default=2, help="notebooks run at once (default 2)")
    args = parser.parse_args(argv)
    if args.print_seeds:
        print(" ".join(map(str, seeds_from_commit(args.print_seeds))))
        return 0
    if any(seed < 0 for seed in args.seeds):
        parser.error(f"expected seeds >= 0, got {args.seeds}")
    chosen = seeds_from_commit(args.seeds_from_commit) if args.seeds_from_commit else args.seeds
    notebooks = [p.resolve() for p in args.notebooks] or find_notebooks(args.lang)
    missing = [str(p) for p in notebooks if p.suffix != ".ipynb" or not p.exists()]
    if missing:
        parser.error(f"expected existing chapter .ipynb files, got {missing}")
    print(f"backend {args.backend}, seeds {' '.join(map(str, chosen))}", flush=True)

    # The longest first, so that the last notebooks to finish are short ones: a notebook's size
    # (its stored figures and outputs) roughly follows how long it runs.
    notebooks = sorted(notebooks, key=lambda p: p.stat().st_size, reverse=True)
    runs = [(notebook, seed) for seed in chosen for notebook in notebooks]
    failed = 0
    with concurrent.futures.ProcessPoolExecutor(max_workers=args.jobs) as pool:
        threads = max(1, (os.cpu_count() or 1) // args.jobs)
        futures = {
            pool.submit(run_one, nb, args.backend, seed, threads): (nb, seed) for nb, seed in runs
        }
        for future in concurrent.futures.as_completed(futures):
            notebook, seed = futures[future]
            seconds, claims, error = future.result()
            failed += error is not None
            where = notebook.relative_to(ROOT) if notebook.is_relative_to(ROOT) else notebook
            status = "FAILED" if error else "ok"
            print(f"{status:6} {seconds:6.1f} s  {claims:3d} claims  seed {seed:<5} {where}",
                  flush=True)  # fmt: skip
            if error:
                print(f"       {error}", flush=True)
    print(f"{len(runs) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
