"""Run folders that are whole or absent, owned by one run at a time, holding only kvae's files.

A run folder is built under a hidden sibling name and renamed into place when it
is complete, so a killed run never leaves a half-written folder under the name
asked for. Around that:

- **marker**: ``kvae-run.json`` names the run (``run_id``) and lists every file
  kvae wrote. ``force`` replaces a folder only if it carries the marker and
  holds nothing else: a folder without one (a user's project, a run written
  before markers existed) or with files kvae did not write is refused, never
  deleted.
- **lock**: ``reserve`` holds an exclusive ``fcntl.flock`` on a hidden lock file
  beside the target, ``.NAME.lock``, for the whole run; a second run on the same
  target is refused at once. The lock file is removed when the run ends.
- **stale staging**: a staging folder is named ``.NAME.partial-PID-XXXXXX``. One
  whose process is gone (a SIGKILL, a power cut) is removed by the next run that
  holds the lock on NAME; a live process's folder is never touched.

This module imports nothing from Keras, so the command line checks a target
before Keras loads.
"""

import contextlib
import csv
import errno
import fcntl
import json
import os
import pathlib
import re
import secrets
import shutil
import signal
import zipfile

from kvae.config import ConfigError, TrainConfig

MARKER_FILE = "kvae-run.json"
MODEL_FILE = "model.keras"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.json"
FIGURES_DIR = "figures"
# ".NAME.partial-PID-XXXXXX": 1 + len(".partial-") + 7 (pid_max is 4194304) + 1 + 6.
STAGING_EXTRA = 24
_STAGING = re.compile(r"(?:partial|old)-(\d+)-[0-9a-f]{6}")
_HELD = {}  # target path -> [lock file descriptor, depth]: reserve() nests within a process
_STOP = {"signal": None}  # set by stop_on(): a stop asked for, even if its exception was lost


class Terminated(BaseException):
    """SIGTERM (or another stop signal), raised like KeyboardInterrupt so staging is cleaned up."""


def request_stop(signum):
    """Note that the process was asked to stop, and raise its exception (a signal handler)."""
    _STOP["signal"] = signum
    raise stop_exception(signum)


def stop_exception(signum):
    """SIGINT's ``KeyboardInterrupt``, as Python's own handler raises; ``Terminated`` otherwise."""
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)


def stop_requested():
    """The signal number of a stop asked for in this process, or None."""
    return _STOP["signal"]


def check_target(run_dir, force):
    """Refuse a target that cannot become a run folder; returns it as an absolute path.

    Checks, in order: the name (not empty, short enough for the staging name on
    this file system), that it is not a symbolic link, that the nearest existing
    ancestor is a writable directory (missing parents are created by ``reserve``),
    and that the target is free, or with ``force`` a folder kvae wrote that
    holds nothing else.

    Raises:
        ConfigError: the one-line reason.
    """
    run_dir = pathlib.Path(os.path.abspath(run_dir))
    if run_dir.name in ("", ".", ".."):
        raise ConfigError(f"run folder {str(run_dir)!r} has no name to create")
    ancestor = _existing_ancestor(run_dir.parent)
    if not ancestor.is_dir():
        raise ConfigError(f"cannot create {str(run_dir)!r}: {str(ancestor)!r} is not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot create {str(run_dir)!r}: {str(ancestor)!r} is not writable")
    limit = os.pathconf(ancestor, "PC_NAME_MAX")
    if len(os.fsencode(run_dir.name)) + STAGING_EXTRA > limit:
        raise ConfigError(
            f"run folder name is too long: {len(os.fsencode(run_dir.name))} bytes, and this "
            f"file system allows {limit - STAGING_EXTRA} (kvae adds {STAGING_EXTRA} for the "
            "hidden staging name)"
        )
    if run_dir.is_symlink():
        raise ConfigError(f"run folder {str(run_dir)!r} is a symbolic link; give a real path")
    if run_dir.exists():
        _check_replaceable(run_dir, force)
    return run_dir


def _existing_ancestor(path):
    while not os.path.lexists(path):
        path = path.parent
    return path


def _check_replaceable(run_dir, force):
    if not force:
        raise ConfigError(f"run folder {str(run_dir)!r} already exists; use --force to replace it")
    if not run_dir.is_dir():
        raise ConfigError(f"refusing to replace {str(run_dir)!r}: it is not a folder")
    if not any(run_dir.iterdir()):
        return
    marker = read_marker(run_dir)
    if marker is None:
        raise ConfigError(
            f"refusing to replace {str(run_dir)!r}: it has no valid {MARKER_FILE}, so kvae did "
            "not write it (runs written by kvae before 0.2 have none either); delete it yourself"
        )
    unknown = unknown_entries(run_dir, marker["files"])
    if unknown:
        raise ConfigError(
            f"refusing to replace {str(run_dir)!r}: it holds files kvae did not write: "
            f"{', '.join(unknown)}; move them out first"
        )


def read_marker(run_dir):
    """The marker's dict (``run_id``, ``files``), or None if it is missing or malformed."""
    try:
        marker = json.loads((pathlib.Path(run_dir) / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or not isinstance(marker.get("run_id"), str):
        return None
    files = marker.get("files")
    if not isinstance(files, list) or not all(isinstance(name, str) for name in files):
        return None
    return marker


def unknown_entries(run_dir, files):
    """Entries under ``run_dir`` that are neither in ``files`` nor folders holding them.

    A folder kvae never wrote into is reported whole (``analysis/``), not file by file.
    """
    known = set(files) | {MARKER_FILE}
    folders = {str(pathlib.PurePosixPath(name).parent) for name in known} - {"."}
    unknown = []
    for root, dirs, names in os.walk(run_dir):
        relative = pathlib.Path(root).relative_to(run_dir)
        for name in sorted(dirs):
            path = (relative / name).as_posix()
            if path not in folders:
                unknown.append(path + "/")
        dirs[:] = [d for d in dirs if (relative / d).as_posix() in folders]
        unknown += [p for p in ((relative / n).as_posix() for n in names) if p not in known]
    return sorted(unknown)


def written_files(run_dir):
    """Every file under ``run_dir``, as sorted relative POSIX paths."""
    run_dir = pathlib.Path(run_dir)
    return sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file())


def write_marker(run_dir, run_id):
    """Write ``kvae-run.json``: the run id and the files now in ``run_dir`` (itself excluded)."""
    files = [name for name in written_files(run_dir) if name != MARKER_FILE]
    write_json(pathlib.Path(run_dir) / MARKER_FILE, {"run_id": run_id, "files": files})


def new_run_id():
    return secrets.token_hex(8)


# --- the lock ---------------------------------------------------------------------------------


@contextlib.contextmanager
def reserve(run_dir, force):
    """Check ``run_dir`` and hold its lock until the block ends; yields the absolute path.

    The parents of ``run_dir`` are created if missing. Stale staging folders of
    ``run_dir`` left by killed runs are removed. Within one process ``reserve``
    nests (the command line reserves before Keras loads, ``train_and_evaluate``
    again): only the outermost one locks.

    Raises:
        ConfigError: the target cannot be used (see ``check_target``), or another
            run holds it.
    """
    run_dir = check_target(run_dir, force)
    key = str(run_dir)
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield run_dir
        finally:
            _HELD[key][1] -= 1
        return
    try:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"cannot create {str(run_dir.parent)!r}: {error.strerror}") from None
    lock_path = run_dir.with_name(f".{run_dir.name}.lock")
    descriptor = _lock(lock_path, run_dir)
    _HELD[key] = [descriptor, 1]
    try:
        check_target(run_dir, force)  # a run that held the lock may have just written it
        remove_stale_staging(run_dir)
        yield run_dir
    finally:
        del _HELD[key]
        lock_path.unlink(missing_ok=True)  # before unlocking: a waiter re-checks the inode
        os.close(descriptor)


def _lock(lock_path, run_dir):
    """Open and flock ``lock_path``; refuse at once if another process holds it."""
    while True:
        try:
            descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as error:
            raise ConfigError(
                f"cannot create {str(run_dir)!r}: {str(run_dir.parent)!r}: {error.strerror}"
            ) from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(descriptor)
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            raise ConfigError(
                f"run folder {str(run_dir)!r} is in use by another kvae process "
                f"(lock {lock_path.name}); wait for it or choose another --out"
            ) from None
        # The holder removes the file before unlocking: if ours was removed, lock the new one.
        try:
            if os.stat(lock_path).st_ino == os.fstat(descriptor).st_ino:
                os.ftruncate(descriptor, 0)
                os.write(descriptor, f"{os.getpid()}\n".encode())
                return descriptor
        except FileNotFoundError:
            pass
        os.close(descriptor)


def remove_stale_staging(run_dir):
    """Remove ``.NAME.partial-PID-*`` / ``.NAME.old-PID-*`` folders whose process is gone.

    Called with the lock on NAME held, so no live run is building them; the pid
    check also spares a folder whose pid a live process has since been given.
    """
    run_dir = pathlib.Path(run_dir)
    prefix = f".{run_dir.name}."
    for path in run_dir.parent.iterdir():
        if not path.name.startswith(prefix):
            continue
        match = _STAGING.fullmatch(path.name[len(prefix) :])
        if match and path.is_dir() and not path.is_symlink() and not _alive(int(match[1])):
            if read_marker(path) is not None or not any(path.iterdir()) or _only_kvae(path):
                shutil.rmtree(path, ignore_errors=True)


def _only_kvae(path):
    """A staging folder killed before its marker was written holds only kvae's file names."""
    names = {MODEL_FILE, CONFIG_FILE, METRICS_FILE, HISTORY_FILE, "history.csv", FIGURES_DIR}
    names |= {"sweep.json", "sweep.csv", "sweep.md", MARKER_FILE}
    return all(p.name in names for p in path.iterdir())


def _alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


@contextlib.contextmanager
def lock_existing(run_dir):
    """Hold the lock of an existing run folder (``kvae figures``); yields its absolute path.

    Raises:
        ConfigError: ``run_dir`` is not a folder, or another kvae process holds it.
    """
    run_dir = pathlib.Path(os.path.abspath(run_dir))
    if not run_dir.is_dir():
        raise ConfigError(f"run folder {str(run_dir)!r} does not exist")
    key = str(run_dir)
    if key in _HELD:
        yield run_dir
        return
    lock_path = run_dir.with_name(f".{run_dir.name}.lock")
    descriptor = _lock(lock_path, run_dir)
    _HELD[key] = [descriptor, 1]
    try:
        yield run_dir
    finally:
        del _HELD[key]
        lock_path.unlink(missing_ok=True)
        os.close(descriptor)


def read_run(run_dir):
    """Check a saved run's files before Keras loads the model; returns ``(config, history)``.

    ``model.keras`` must be a whole Keras archive, ``config.json`` a valid
    ``TrainConfig``, ``history.json`` per-epoch lists of numbers of one length.

    Raises:
        ConfigError: one line naming the file and its problem.
    """
    run_dir = pathlib.Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run folder {str(run_dir)!r} does not exist")
    for name in (MODEL_FILE, CONFIG_FILE, HISTORY_FILE):
        if not (run_dir / name).is_file():
            raise ConfigError(f"{str(run_dir)!r} is not a run folder: it has no {name}")
    _check_archive(run_dir / MODEL_FILE)
    config_path = run_dir / CONFIG_FILE
    try:
        config = TrainConfig.from_dict(_read_json(config_path))
    except (ConfigError, TypeError) as error:
        raise ConfigError(f"{str(config_path)!r} is not a valid run config: {error}") from None
    return config, _check_history(run_dir / HISTORY_FILE)


def _read_json(path):
    try:
        return json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"{str(path)!r} is not readable JSON: {error}") from None


def _check_archive(path):
    """A ``.keras`` file is a zip holding ``config.json`` and ``model.weights.h5``, CRCs intact."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            damaged = archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise ConfigError(f"{str(path)!r} is not a Keras model archive: {error}") from None
    missing = sorted({"config.json", "model.weights.h5"} - names)
    if missing or damaged:
        problem = f"it lacks {', '.join(missing)}" if missing else f"{damaged} is damaged"
        raise ConfigError(f"{str(path)!r} is not a whole Keras model archive: {problem}")


def _check_history(path):
    history = _read_json(path)
    expected = "an object of per-epoch lists of numbers, all of one length"
    ok = (
        isinstance(history, dict)
        and history
        and all(
            isinstance(v, list) and v and all(_is_number(x) for x in v) for v in history.values()
        )
    )
    if not ok or len({len(v) for v in history.values()}) != 1:
        raise ConfigError(f"{str(path)!r} is malformed: expected {expected}")
    return history


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --- staging ----------------------------------------------------------------------------------


@contextlib.contextmanager
def staged(run_dir, force, run_id):
    """Build a folder under a hidden sibling name; rename it into place only on success.

    Call inside ``reserve(run_dir, ...)``. On any error (a NaN, Ctrl-C, SIGTERM)
    the staging folder is removed and ``run_dir`` is left as it was. With
    ``force`` the old run is swapped out, then deleted. The marker is written
    last, listing every file the block wrote.
    """
    run_dir = pathlib.Path(os.path.abspath(run_dir))
    # Same file system as the target, so the final rename is atomic.
    staging = run_dir.with_name(f".{run_dir.name}.partial-{os.getpid()}-{secrets.token_hex(3)}")
    staging.mkdir()  # unlike tempfile.mkdtemp, keeps the umask's permissions (not 0700)
    old = None
    try:
        write_json(staging / MARKER_FILE, {"run_id": run_id, "files": []})
        yield staging
        # Library code that catches every exception can swallow the Terminated that a
        # signal raised mid-write; the folder may then lack a file, so it is not renamed.
        if stop_requested() is not None:
            raise stop_exception(stop_requested())
        write_marker(staging, run_id)
        check_target(run_dir, force)
        if run_dir.exists():
            old = staging.with_name(staging.name.replace(".partial-", ".old-"))
            os.rename(run_dir, old)
        os.rename(staging, run_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if old is not None and not run_dir.exists():
            os.rename(old, run_dir)  # the swap failed half-way: put the old run back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# --- files ------------------------------------------------------------------------------------


def write_json(path, value):
    """Write JSON through a unique temporary name and ``os.replace``: readers see old or new."""
    write_text(path, json.dumps(value, indent=2) + "\n")


def write_text(path, text):
    path = pathlib.Path(path)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}-{secrets.token_hex(3)}")
    try:
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_csv(path, rows, columns=None):
    """Rows (dicts) as CSV, with ``columns`` (default: the first row's keys) as the header."""
    path = pathlib.Path(path)
    columns = list(columns or (rows[0] if rows else []))
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}-{secrets.token_hex(3)}")
    try:
        with open(partial, "w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def unique_partial(path):
    """A hidden, unique temporary name beside ``path`` (same suffix), for an atomic replace."""
    path = pathlib.Path(path)
    return path.with_name(f".{path.stem}.partial-{os.getpid()}-{secrets.token_hex(3)}{path.suffix}")
