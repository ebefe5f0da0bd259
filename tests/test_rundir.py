"""Run folders on a real file system, with real processes for the lock and stale staging."""

import json
import os
import signal
import subprocess
import sys

import pytest
from folders import immutable, writable_again

from kvae import rundir
from kvae.config import ConfigError

# Holds the lock on argv[1] until killed; says so on stdout first.
HOLDER = (
    "import sys, time; from kvae import rundir\n"
    "with rundir.reserve(sys.argv[1], force=False):\n"
    "    print('locked', flush=True); time.sleep(120)\n"
)


def make_run(folder, extra=()):
    """A folder as kvae leaves it: two files, one figure, and the marker listing them."""
    (folder / "figures").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.keras").write_bytes(b"weights")
    (folder / "figures" / "loss_curves.png").write_bytes(b"png")
    rundir.write_marker(folder, "abc123")
    for name in extra:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("the user's")
    return folder


def test_marker_lists_every_file_kvae_wrote(tmp_path):
    marker = rundir.read_marker(make_run(tmp_path / "run"))
    assert marker == {
        "run_id": "abc123",
        "files": ["config.json", "figures/loss_curves.png", "model.keras"],
    }


def test_force_replaces_a_folder_holding_only_kvae_files(tmp_path):
    run = make_run(tmp_path / "run")
    assert rundir.check_target(run, force=True) == run
    with pytest.raises(ConfigError, match="already exists; use --force"):
        rundir.check_target(run, force=False)


def test_force_refuses_files_the_user_added_and_names_them(tmp_path):
    run = make_run(tmp_path / "run", ["NOTES.md", "analysis/fit.py", "figures/mine.png"])
    with pytest.raises(ConfigError) as raised:
        rundir.check_target(run, force=True)
    assert "NOTES.md, analysis/, figures/mine.png" in str(raised.value)
    assert (run / "analysis" / "fit.py").read_text() == "the user's"


def test_force_refuses_a_folder_without_the_marker(tmp_path):
    project = tmp_path / "p"
    project.mkdir()
    (project / "config.json").write_text('{"name": "app"}')
    (project / "main.py").write_text("x")
    with pytest.raises(ConfigError, match="no valid kvae-run.json.*before 0.2"):
        rundir.check_target(project, force=True)
    (project / "kvae-run.json").write_text('{"run_id": 7}')  # malformed: not kvae's either
    with pytest.raises(ConfigError, match="no valid kvae-run.json"):
        rundir.check_target(project, force=True)
    assert (project / "main.py").read_text() == "x"


@pytest.fixture(autouse=True)
def _writable_again(tmp_path):
    yield
    for path in tmp_path.iterdir():
        if path.name == "locked":
            writable_again(path)


def _file(path):
    path.write_text("x")
    return path


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda t: _file(t / "afile") / "sub", ["is not a folder"]),
        (lambda t: (t / "link").symlink_to(t / "nowhere") or t / "link", ["symbolic link"]),
        (lambda t: t / ("a" * 245), ["too long", "245", "231"]),
        (lambda t: immutable(t / "locked") / "run", ["is not writable"]),
    ],
)
def test_targets_that_cannot_work_are_refused(tmp_path, make, words):
    with pytest.raises(ConfigError) as raised:
        rundir.check_target(make(tmp_path), force=False)
    for word in words:
        assert word in str(raised.value)


def test_a_name_that_fits_with_its_staging_name_is_accepted(tmp_path):
    name = "a" * (os.pathconf(tmp_path, "PC_NAME_MAX") - rundir.STAGING_EXTRA)
    with rundir.reserve(tmp_path / name, force=False) as run:
        with rundir.staged(run, False, "id") as staging:
            (staging / "config.json").write_text("{}")
    assert (tmp_path / name / "config.json").is_file()


def test_missing_parents_are_created(tmp_path):
    with rundir.reserve(tmp_path / "a" / "b" / "run", force=False) as run:
        assert run.parent.is_dir()
    assert sorted(os.listdir(run.parent)) == []  # the lock file went with the lock


def test_a_second_process_is_refused_while_the_first_holds_the_lock(tmp_path):
    target = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(target)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match="in use by another kvae process"):
            with rundir.reserve(target, force=True):
                pass
    finally:
        holder.kill()  # SIGKILL: the kernel drops the lock with the process
        holder.wait()
    with rundir.reserve(target, force=False):
        pass


def test_reserve_nests_within_one_process(tmp_path):
    with rundir.reserve(tmp_path / "run", force=False) as outer:
        with rundir.reserve(outer, force=False) as inner:
            assert inner == outer
        assert (tmp_path / ".run.lock").exists()  # still held by the outer block
    assert not (tmp_path / ".run.lock").exists()


def test_stale_staging_of_a_dead_process_is_removed_and_a_live_ones_kept(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(dead.stdout)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = make_run(tmp_path / f".run.partial-{dead_pid}-abcdef")
        empty = tmp_path / f".run.old-{dead_pid}-123456"
        empty.mkdir()
        alive = make_run(tmp_path / f".run.partial-{live.pid}-abcdef")
        users = tmp_path / f".run.partial-{dead_pid}-fedcba"  # same shape, not kvae's content
        users.mkdir()
        (users / "thesis.tex").write_text("mine")
        other = make_run(tmp_path / f".other.partial-{dead_pid}-abcdef")  # another target's
        with rundir.reserve(tmp_path / "run", force=False):
            pass
        assert not stale.exists() and not empty.exists()
        assert alive.is_dir() and (users / "thesis.tex").is_file() and other.is_dir()
    finally:
        live.send_signal(signal.SIGKILL)
        live.wait()


def test_staged_folder_appears_whole_or_not_at_all(tmp_path):
    target = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with rundir.reserve(target, False), rundir.staged(target, False, "id") as staging:
            (staging / "config.json").write_text("{}")
            raise RuntimeError("a failure half-way")
    assert os.listdir(tmp_path) == []
    with rundir.reserve(target, False), rundir.staged(target, False, "id") as staging:
        (staging / "config.json").write_text("{}")
    assert json.loads((target / "kvae-run.json").read_text())["files"] == ["config.json"]
    assert sorted(os.listdir(tmp_path)) == ["run"]


def test_read_run_names_the_damaged_file(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_bytes(b"PK\x03\x04 not really a zip")
    (run / "config.json").write_text("{}")
    (run / "history.json").write_text('{"loss": [1.0]}')
    with pytest.raises(ConfigError, match="model.keras' is not a Keras model archive"):
        rundir.read_run(run)
