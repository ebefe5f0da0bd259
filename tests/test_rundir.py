"""Run folders on a real file system, with real processes for the lock and stale staging."""

import json
import os
import pathlib
import signal
import struct
import subprocess
import sys
import time
import zipfile
import zlib

import pytest
from folders import immutable, writable_again

from kvae import rundir
from kvae.config import ConfigError

RUN_ID = "abcdef0123456789"  # kvae's run ids are 16 hex digits; staging names carry the first 6
# Holds the lock on argv[1] until killed; says so on stdout first.
HOLDER = (
    "import sys, time; from kvae import rundir\n"
    "with rundir.reserve(sys.argv[1], force=False):\n"
    "    print('locked', flush=True); time.sleep(120)\n"
)


def make_run(folder, extra=(), run_id="abc123"):
    """A folder as kvae leaves it: two files, one figure, and the marker listing them."""
    (folder / "figures").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.keras").write_bytes(b"weights")
    (folder / "figures" / "loss_curves.png").write_bytes(b"png")
    rundir.write_marker(folder, run_id)
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
        stale = make_run(tmp_path / f".run.partial-{dead_pid}-abcdef", run_id=RUN_ID)
        empty = tmp_path / f".run.old-{dead_pid}-123456"
        empty.mkdir()
        alive = make_run(tmp_path / f".run.partial-{live.pid}-abcdef", run_id=RUN_ID)
        users = tmp_path / f".run.partial-{dead_pid}-fedcba"  # same shape, not kvae's content
        users.mkdir()
        (users / "thesis.tex").write_text("mine")
        other = make_run(tmp_path / f".other.partial-{dead_pid}-abcdef", run_id=RUN_ID)
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


def test_a_stop_that_lands_just_after_the_staging_folder_is_made_leaves_nothing(
    tmp_path, monkeypatch
):
    # A signal handler runs at the next bytecode after os.mkdir returns, still inside pathlib's
    # mkdir: the moment `kvae train`'s SIGTERM test hits when it sends on seeing the folder.
    make_folder = pathlib.Path.mkdir

    def mkdir_then_signal(path, *args, **kwargs):
        make_folder(path, *args, **kwargs)
        if ".partial-" in path.name:
            rundir.request_stop(signal.SIGTERM)  # what the installed handler does

    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir_then_signal)
    target = tmp_path / "run"
    try:
        with pytest.raises(rundir.Terminated):
            with rundir.reserve(target, False), rundir.staged(target, False, "id"):
                raise AssertionError("the stop must end the run before it writes anything")
    finally:
        rundir.clear_stop()
    assert os.listdir(tmp_path) == []


def test_read_run_names_the_damaged_file(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_bytes(b"PK\x03\x04 not really a zip")
    (run / "config.json").write_text("{}")
    (run / "history.json").write_text('{"loss": [1.0]}')
    with pytest.raises(ConfigError, match="model.keras' is not a Keras model archive"):
        rundir.read_run(run)


# --- symbolic links, look-alikes, crafted archives (issue 24) ----------------------------------

FIGURES_HOLDER = (
    "import sys, time; from kvae import rundir\n"
    "with rundir.lock_existing(sys.argv[1]):\n"
    "    print('locked', flush=True); time.sleep(120)\n"
)


def dead_pid():
    """The pid of a process that has ended (and, a moment later, not been reused)."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


def fake_run(folder):
    """The files ``read_run`` looks at first; the model is no archive (checked after them)."""
    folder.mkdir()
    (folder / "model.keras").write_bytes(b"not checked before the folders")
    (folder / "config.json").write_text("{}")
    (folder / "history.json").write_text('{"loss": [1.0]}')
    return folder


def test_add_to_marker_lists_only_the_files_written(tmp_path):
    """Item 1: redrawing figures must not adopt a user's file (or a half-written one)."""
    run = make_run(tmp_path / "run", ["NOTES.md"])
    partial = run / "figures" / ".samples.partial-99-abcdef.png"
    partial.write_bytes(b"half")
    (run / "figures" / "samples.png").write_bytes(b"png")
    rundir.add_to_marker(run, [run / "figures" / "samples.png"])
    assert rundir.read_marker(run) == {
        "run_id": "abc123",
        "files": ["config.json", "figures/loss_curves.png", "figures/samples.png", "model.keras"],
    }
    with pytest.raises(ConfigError, match="NOTES.md, figures/.samples.partial"):
        rundir.check_target(run, force=True)


@pytest.mark.parametrize("dangling", [False, True])
def test_a_symlinked_lock_is_refused_never_followed(tmp_path, dangling):
    """Item 2: the lock opens with O_NOFOLLOW: a link in its place is never written through."""
    victim = tmp_path / "elsewhere" / "v.txt"
    victim.parent.mkdir()
    if not dangling:
        victim.write_text("DATA\n")
    run = make_run(tmp_path / "run")
    (tmp_path / ".run.lock").symlink_to(victim)
    for enter in (lambda: rundir.reserve(run, force=True), lambda: rundir.lock_existing(run)):
        with pytest.raises(ConfigError, match="symbolic link that kvae did not create"):
            with enter():
                pass
    assert victim.read_text() == "DATA\n" if not dangling else not victim.exists()
    assert (tmp_path / ".run.lock").is_symlink()  # left as the user made it


def test_a_symlinked_figures_folder_is_refused(tmp_path):
    """Item 3: ``kvae figures`` never writes PNGs through a link someone put in a run."""
    run = fake_run(tmp_path / "run")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run / "figures").symlink_to(elsewhere)
    with pytest.raises(ConfigError, match="figures': it is a symbolic link"):
        rundir.read_run(run)


def test_stale_clean_up_leaves_look_alikes_with_a_note(tmp_path, capsys):
    """Item 4: only folders holding nothing but what a kvae marker inside lists are removed."""
    pid = dead_pid()
    users = tmp_path / f".run.partial-{pid}-abcdef"  # the right shape, no marker
    (users / "figures").mkdir(parents=True)
    (users / "figures" / "thesis.tex").write_text("x")
    swapped = make_run(tmp_path / f".run.old-{pid}-abcdef", ["data.csv"], run_id=RUN_ID)
    copied = make_run(tmp_path / f".run.old-{pid}-123456", run_id=RUN_ID)  # another run's marker
    killed = tmp_path / f".run.partial-{pid}-0123ab"  # as kvae leaves it, SIGKILLed
    killed.mkdir()
    rundir.write_marker(killed, "0123ab4567cdef89", rundir.PLANNED_FILES)
    (killed / "figures").mkdir()
    (killed / "model.keras").write_bytes(b"weights")
    (killed / "figures" / f".samples.partial-{pid}-0a1b2c.png").write_bytes(b"half")
    first = tmp_path / f".run.partial-{pid}-4567ab"  # SIGKILLed while writing its first marker
    first.mkdir()
    (first / f".{rundir.MARKER_FILE}.partial-{pid}-9f8e7d").write_text('{"run_id": "45')
    with rundir.reserve(tmp_path / "run", force=False):
        pass
    assert not killed.exists() and not first.exists()
    assert (users / "figures" / "thesis.tex").read_text() == "x"
    assert (swapped / "data.csv").is_file() and copied.is_dir()
    notes = capsys.readouterr().err.strip().splitlines()
    assert len(notes) == 3 and all(line.startswith("kvae: note: left") for line in notes)
    assert any("data.csv" in line for line in notes)


def test_two_names_for_one_run_share_its_lock(tmp_path):
    """Item 5: the lock is the resolved folder's, so an alias and the real name exclude."""
    real = make_run(tmp_path / "real")
    (tmp_path / "alias").symlink_to(real)
    (tmp_path / "via").symlink_to(tmp_path)  # a linked parent: the same folder again
    holder = subprocess.Popen(
        [sys.executable, "-c", FIGURES_HOLDER, str(tmp_path / "alias")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        for target in (real, tmp_path / "via" / "real"):
            with pytest.raises(ConfigError, match="in use by another kvae process"):
                with rundir.reserve(target, force=True):
                    pass
    finally:
        holder.kill()
        holder.wait()


def crafted_archive(path, copies, member_size, name="model.weights.h5"):
    """A zip whose central directory lists one deflated member ``copies`` times.

    ``member_size`` zero bytes compress to about a thousandth of that, so the
    file is small while every listed copy would have to be inflated whole.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk, crc, data = bytes(2**20), 0, []
    for _ in range(member_size // len(chunk)):
        data.append(compressor.compress(chunk))
        crc = zlib.crc32(chunk, crc)
    data = b"".join(data) + compressor.flush()
    encoded = name.encode()
    sizes = (crc, len(data), member_size, len(encoded))
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, *sizes, 0) + encoded
    entry = (
        struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, *sizes, 0, 0, 0, 0, 0, 0)
        + encoded
    )
    directory = entry * copies
    end = struct.pack(
        "<IHHHHIIH", 0x06054B50, 0, 0, copies, copies, len(directory), len(local) + len(data), 0
    )
    path.write_bytes(local + data + directory + end)
    return path


CHECK_ARCHIVE = "import sys; from kvae import rundir; rundir._check_archive(sys.argv[1])"


@pytest.mark.parametrize(
    ("copies", "member_size", "words"),
    [
        (2000, 64 * 2**20, "lists 2000 members"),
        (3, 64 * 2**20, "a member name twice"),
    ],
)
def test_a_crafted_archive_is_refused_from_its_directory_alone(
    tmp_path, copies, member_size, words
):
    """Item 6: counts and sizes come from the central directory, before any byte is inflated.

    Checking CRCs first would inflate 2000 x 64 MiB here: minutes, in a subprocess
    that this test would give up on.
    """
    path = crafted_archive(tmp_path / "model.keras", copies, member_size)
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", CHECK_ARCHIVE, str(path)], capture_output=True, text=True, timeout=60
    )
    assert time.monotonic() - started < 30
    assert "ConfigError" in result.stderr and words in result.stderr, result.stderr[-2000:]


def test_an_archive_claiming_more_than_deflate_can_give_is_refused(tmp_path):
    path = crafted_archive(tmp_path / "model.keras", 1, 2**20)
    raw = bytearray(path.read_bytes())
    at = raw.index(struct.pack("<I", 0x02014B50)) + 24  # the central entry's uncompressed size
    raw[at : at + 4] = struct.pack("<I", 2**32 - 1)
    path.write_bytes(bytes(raw))
    with pytest.raises(ConfigError, match="claims 4294967295 bytes"):
        rundir._check_archive(path)


def test_a_path_too_long_for_the_files_inside_is_refused_before_anything(tmp_path):
    """Item 10: a 4,080-byte --out is refused by its length, not after training."""
    limit = os.pathconf(tmp_path, "PC_PATH_MAX") - 1
    parts, length = [], len(str(tmp_path))
    while length < limit - 16 - 200:
        parts.append("d" * 200)
        length += 201
    target = tmp_path.joinpath(*parts, "r" * (limit - 16 - length - 1))
    assert len(str(target)) == limit - 16  # itself it fits, and its staging name too
    assert len(target.name) + rundir.STAGING_EXTRA <= 255
    with pytest.raises(ConfigError, match="path is too long"):
        rundir.check_target(target, force=False)
    assert list(tmp_path.iterdir()) == []


def test_deeply_nested_json_is_one_error_not_a_recursion(tmp_path):
    """Item 10: JSON nested past Python's recursion limit is a malformed file, named."""
    run = fake_run(tmp_path / "run")
    nested = "[" * 100_000 + "]" * 100_000
    (run / "kvae-run.json").write_text(nested)
    assert rundir.read_marker(run) is None
    (run / "model.keras").unlink()
    with zipfile.ZipFile(run / "model.keras", "w") as archive:
        archive.writestr("config.json", "{}")
        archive.writestr("model.weights.h5", b"")
    (run / "config.json").write_text(nested)
    with pytest.raises(ConfigError, match="config.json' is not readable JSON: nested too deeply"):
        rundir.read_run(run)


def test_the_root_is_not_a_run_folder():
    """Item 10: ``kvae figures /`` is one line about the folder, not "empty name"."""
    with pytest.raises(ConfigError, match="cannot be a run folder"):
        with rundir.lock_existing("/"):
            pass


def test_the_2d_companion_archive_is_checked_before_keras_loads(tmp_path):
    """Item 10: a damaged ``model_2d.keras`` is named by ``read_run``, as ``model.keras`` is."""
    run = fake_run(tmp_path / "run")
    with zipfile.ZipFile(run / "model.keras", "w") as archive:
        archive.writestr("config.json", "{}")
        archive.writestr("model.weights.h5", b"")
    (run / "model_2d.keras").write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(ConfigError, match="model_2d.keras' is not a Keras model archive"):
        rundir.read_run(run)
