"""Seconds to execute each chapter notebook, per Keras backend, each in a fresh kernel.

Beside the times, a table of what each chapter's models are: the converged ones it loads
(``kvae.pretrained``, with the epochs their records show) and the ``fit`` calls it still makes
itself, read from the notebook's code.

Every notebook in ``chapters/en`` and ``chapters/ko`` (or the ones named on the command line) runs
top to bottom through ``nbclient`` in a new kernel whose ``KERAS_BACKEND`` is set to the backend
under test, the way a reader (or CI) runs it. Nothing is written back to the notebooks. The table
goes to stdout and to ``benchmarks/chapter_times.md``; a notebook that fails shows the error's name
instead of a time, and the script exits with status 1.

Usage::

    python benchmarks/chapter_times.py                          # every chapter, tensorflow and jax
    python benchmarks/chapter_times.py --backends jax torch
    python benchmarks/chapter_times.py chapters/en/01_elbo.ipynb --no-write
"""

import argparse
import datetime
import os
import re
import shlex
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

# train_throughput.py sits beside this file; its machine description is shared.
from train_throughput import library_versions, load_average, machine_description

from kvae import pretrained

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BACKENDS = ("tensorflow", "jax", "torch")
LANGUAGES = ("en", "ko")


def find_notebooks(chapters):
    """Every ``<chapters>/{en,ko}/*.ipynb``, sorted by language then name."""
    notebooks = []
    for language in LANGUAGES:
        notebooks += sorted((chapters / language).glob("*.ipynb"))
    return [n for n in notebooks if ".ipynb_checkpoints" not in n.parts]


def execute(notebook, backend, timeout):
    """Run one notebook in a fresh kernel; return ``(seconds, None)`` or ``(seconds, error)``."""
    nb = nbformat.read(notebook, as_version=4)
    env = {**os.environ, "KERAS_BACKEND": backend, "MPLBACKEND": "Agg"}
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(notebook.parent)}},
    )
    start = time.perf_counter()
    try:
        client.execute(env=env)
    except CellExecutionError as error:
        return time.perf_counter() - start, error.ename or "CellExecutionError"
    except (CellTimeoutError, DeadKernelError) as error:
        return time.perf_counter() - start, type(error).__name__
    return time.perf_counter() - start, None


def table(times, notebooks, backends):
    """Markdown: one row per notebook, one column per backend, and a total row."""
    lines = [
        "| notebook | " + " | ".join(f"{b} (s)" for b in backends) + " |",
        "|---|" + "---:|" * len(backends),
    ]
    for notebook in notebooks:
        cells = []
        for backend in backends:
            seconds, error = times[notebook, backend]
            cells.append(f"{seconds:.1f}" if error is None else f"**failed** ({error})")
        lines.append(f"| {notebook.relative_to(ROOT)} | " + " | ".join(cells) + " |")
    totals = [sum(times[n, b][0] for n in notebooks) for b in backends]
    lines.append("| **total** | " + " | ".join(f"{t:.1f}" for t in totals) + " |")
    return "\n".join(lines)


def loaded_models(code):
    """The recipes a chapter's code loads: named in a string, or by an f-string's stem."""
    names = []
    for name in sorted(pretrained.RECIPES):
        stem = name.rsplit("_", 1)[0] + "_{"  # f"vae_8d_beta_{beta:g}" loads every beta
        if f'"{name}"' in code or stem in code:
            names.append(name)
    return names


def models_table(notebooks):
    """Markdown: per notebook, the converged models it loads and the fits it runs itself."""
    lines = [
        "| notebook | loads (epochs run, epoch kept) | `fit` calls in its code | epochs it sets |",
        "|---|---|---:|---|",
    ]
    for notebook in notebooks:
        nb = nbformat.read(notebook, as_version=4)
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        loads = [
            f"`{name}` ({pretrained.record(name)['epochs_run']}, "
            f"{pretrained.record(name)['best_epoch']})"
            for name in loaded_models(code)
        ]
        lines_of_code = (line for line in code.splitlines() if "#" not in line.split(".fit(")[0])
        fits = sum(".fit(" in line and "ampler" not in line for line in lines_of_code)
        epochs = sorted(set(re.findall(r"\bepochs=(\d+)|\bEPOCHS = (\d+)", code)))
        epochs = ", ".join(sorted({a or b for a, b in epochs}, key=int)) or "-"
        lines.append(
            f"| {notebook.relative_to(ROOT)} | {', '.join(loads) or '-'} | {fits} | {epochs} |"
        )
    return "\n".join(lines)


def report(times, notebooks, backends, command, loads):
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""# Chapter execution times

Written by `benchmarks/chapter_times.py` (see `benchmarks/README.md`): each notebook executed top to
bottom by `nbclient` in a fresh kernel per backend, wall-clock seconds including the kernel's start
and the imports. The project's aim is about a minute or less per chapter on a 2-core CPU.

- Date: {date}
- Machine: {machine_description()}
- Libraries: {library_versions()}
- Load average (1 / 5 / 15 min) before and after: {loads[0]}; {loads[1]}
- Command: `{command}`

{table(times, notebooks, backends)}

## The models each chapter uses

Every converged model was {pretrained.record("vae_2d")["criterion"]}
(`tools/train_chapter_models.py`; `assets/README.md` has their test metrics). The `fit` calls
a chapter still makes train short runs that it shows as such (a lesson on `fit`, an exercise),
models that are not trained networks of the chapter's kind (a per-digit posterior), or an
optional retraining a reader switches on; sampler fits and comments are not counted.

{models_table(notebooks)}
"""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every chapter")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=["tensorflow", "jax"])
    parser.add_argument("--chapters", type=Path, default=ROOT / "chapters")
    parser.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell")
    parser.add_argument("--output", type=Path, default=HERE / "chapter_times.md")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    notebooks = [n.resolve() for n in args.notebooks] or find_notebooks(args.chapters)
    missing = [str(n) for n in notebooks if not n.is_file()]
    if missing:
        raise SystemExit(f"no such notebook: {', '.join(missing)}")
    if not notebooks:
        raise SystemExit(f"no notebooks found in {args.chapters}/{{en,ko}}/*.ipynb")
    command = shlex.join(["python", "benchmarks/chapter_times.py", *sys.argv[1:]])
    before = load_average()
    times = {}
    for backend in args.backends:
        for notebook in notebooks:
            times[notebook, backend] = execute(notebook, backend, args.timeout)
            seconds, error = times[notebook, backend]
            status = "ok" if error is None else f"FAILED ({error})"
            print(
                f"{backend:10s} {notebook.relative_to(ROOT)}: {seconds:.1f} s {status}", flush=True
            )
    text = report(times, notebooks, args.backends, command, (before, load_average()))
    print(text)
    if not args.no_write:
        args.output.write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    if any(error is not None for _, error in times.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
