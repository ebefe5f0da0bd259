"""kvae.train puts a run together from modules that each hold one concern, imported one way."""

import ast
import pathlib

import pytest

from kvae import evaluate, fitting, report, sweep, train

PACKAGE = pathlib.Path(train.__file__).parent

# Where each moved name is defined; kvae.train only re-exports it, for the README and notebooks.
HOMES = {
    "load_data": fitting,
    "build_vae": fitting,
    "fit": fitting,
    "fit_map": fitting,
    "fit_samplers": fitting,
    "encode": evaluate,
    "evaluate": evaluate,
    "importance_weighted_log_px": evaluate,
    "judge_metrics": evaluate,
    "draw_figures": report,
    "markdown_table": report,
    "sweep": sweep,
}
# The command line on top, the maths at the bottom: a module imports only lower ranks.
RANKS = {"__main__": 7, "cli": 6, "train": 5, "sweep": 4, "report": 3, "evaluate": 2, "fitting": 1}


def kvae_imports(path):
    """The ``kvae`` modules ``path`` imports, at the top or inside a function, by short name."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kvae"):
            if node.module == "kvae":  # from kvae import evaluate, plots
                names.update(alias.name for alias in node.names)
            else:
                names.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            names.update(
                alias.name.split(".")[1] for alias in node.names if alias.name.startswith("kvae.")
            )
    return names


@pytest.mark.parametrize("name", sorted(HOMES))
def test_a_name_reached_through_train_is_the_function_its_module_holds(name):
    moved = getattr(train, name)
    assert moved is getattr(HOMES[name], name)
    assert moved.__module__ == HOMES[name].__name__  # defined there, not re-exported from train
    assert name in train.__all__


def test_imports_run_one_way():
    """No module imports one of equal or higher rank, and nothing below imports the faces."""
    for path in sorted(PACKAGE.rglob("*.py")):
        module = path.stem
        for target in kvae_imports(path) & set(RANKS):
            assert target != module
            rank = RANKS.get(module, 0)  # models, elbo, plots, rundir ...: below them all
            assert RANKS[target] < rank, (
                f"{path.relative_to(PACKAGE)} imports kvae.{target}; expected imports to run "
                f"from the command line down (ranks {RANKS})"
            )


def test_each_module_holds_one_concern():
    """The split's modules keep to their concern: fitting neither evaluates nor draws."""
    assert not {"evaluate", "report", "judge", "plots", "rundir"} & kvae_imports(
        PACKAGE / "fitting.py"
    )
    assert not {"report", "plots", "rundir"} & kvae_imports(PACKAGE / "evaluate.py")
    for module in (fitting, evaluate, report, sweep, train):
        summary = module.__doc__.strip().splitlines()[0]
        assert summary.endswith("."), f"kvae.{module.__name__}: expected a one-sentence summary"
