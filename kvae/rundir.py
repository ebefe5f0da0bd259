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
  target is refused at once. The lock file is removed when the run ends. The lock
  is taken on the resolved folder (symbolic links in the path followed), so two
  names for one folder exclude each other; the lock file itself is opened with
  ``O_NOFOLLOW``: kvae never writes through a link it did not create.
- **stale staging**: a staging folder is named ``.NAME.partial-PID-TAG`` (``TAG``:
  the first six digits of its run id; ``.NAME.old-PID-TAG`` for a run swapped out
  by ``force``). Its marker is written first and lists the files the run may
  write. One whose process is gone (a SIGKILL, a power cut) is removed by the
  next run that holds the lock on NAME, only if it holds nothing but what its
  marker lists (and their half-written temporaries) and the marker's run id
  matches the name's tag; anything else is left in place with a one-line note.
  A live process's folder is never touched.
- **stop signals**: ``request_stop`` is the handler the command line installs
  for SIGINT and SIGTERM: it notes the signal and raises on every delivery,
  except while a clean-up runs (``stops_deferred``), which then ends by raising.

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
import sys
import zipfile

from kvae.config import ConfigError, TrainConfig

MARKER_FILE = "kvae-run.json"
MODEL_FILE = "model.keras"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.json"
MAP_MODEL_FILE = "model_2d.keras"  # the 2-D companion model (TrainConfig.map_epochs)
FIGURES_DIR = "figures"
# Every file kvae may write into a run or sweep folder: a staging folder's first marker
# lists them, so a killed run's staging folder can be told from a user's look-alike.
RUN_FILES = (MODEL_FILE, MAP_MODEL_FILE, CONFIG_FILE, HISTORY_FILE, "history.csv", METRICS_FILE)
RUN_FILES += ("sweep.json", "sweep.csv", "sweep.md")
FIGURE_NAMES = ("loss_curves", "reconstructions", "latent_scatter", "latent_grid")
FIGURE_NAMES += ("interpolation", "samples", "map_latent_scatter", "beta_tradeoff", "sigma_vs_beta")
FIGURE_NAMES += ("same_style",)  # a conditional run's
PLANNED_FILES = (*RUN_FILES, *(f"{FIGURES_DIR}/{name}.png" for name in FIGURE_NAMES))
# ".NAME.partial-PID-XXXXXX": 1 + len(".partial-") + 7 (pid_max is 4194304) + 1 + 6.
STAGING_EXTRA = 24
# A temporary file beside one kvae writes: ".NAME.partial-PID-XXXXXX" (+ the suffix, for
# unique_partial): the same 24 extra bytes.
PARTIAL_EXTRA = STAGING_EXTRA
TAG_DIGITS = 6  # the run id's first digits in a staging folder's name
_STAGING = re.compile(r"(?:partial|old)-(\d+)-([0-9a-f]{6})")
# A Keras archive holds config.json, metadata.json and model.weights.h5; a few more are
# allowed for assets. Past these bounds the file is refused before any member is read:
# checking CRCs reads every byte, so a crafted central directory listing one huge
# member thousands of times would otherwise hold kvae for hours.
MAX_ARCHIVE_MEMBERS = 64
# The largest model TrainConfig allows in practice is tens of MB; 4 GiB of weights will
# not load on a laptop, and checking that many bytes takes seconds, not hours.
MAX_ARCHIVE_BYTES = 4 * 2**30
# Deflate cannot shrink data more than about 1032:1; a member claiming more lies.
MAX_DEFLATE_RATIO = 1032
_HELD = {}  # target path -> [lock file descriptor, depth]: reserve() nests within a process
# A stop asked for (remembered even if library code swallowed its exception), and how many
# clean-ups are running now: a signal that arrives during one is raised when it ends.
_STOP = {"signal": None, "deferred": 0}


class Terminated(BaseException):
    """SIGTERM (or another stop signal), raised like KeyboardInterrupt so staging is cleaned up."""


def request_stop(signum, frame=None):
    """Note that the process was asked to stop, and raise its exception (a signal handler).

    Every delivery raises, so a stop whose exception library code swallowed (one
    raised inside a garbage-collection callback is only printed) is raised again
    by the next one, and at the latest by ``raise_if_stopped`` between steps.
    Inside ``stops_deferred`` (a clean-up) it only notes the signal.
    """
    _STOP["signal"] = signum
    if not _STOP["deferred"]:
        raise stop_exception(signum)


def stop_exception(signum):
    """SIGINT's ``KeyboardInterrupt``, as Python's own handler raises; ``Terminated`` otherwise."""
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)


def stop_requested():
    """The signal number of a stop asked for in this process, or None."""
    return _STOP["signal"]


def raise_if_stopped():
    """Raise the exception of a stop asked for earlier (between steps of a run)."""
    if _STOP["signal"] is not None and not _STOP["deferred"]:
        raise stop_exception(_STOP["signal"])


def clear_stop():
    """Forget a stop asked for earlier: a new command starts (``kvae.cli.main``)."""
    _STOP["signal"] = None


@contextlib.contextmanager
def stops_deferred():
    """Run a clean-up that a stop signal must not cut in half; a stop noted meanwhile is raised.

    Only the exception is deferred, not the stop: when the block ends, a signal
    that arrived during it raises (unless another exception is already on its way out).
    """
    _STOP["deferred"] += 1
    try:
        yield
    finally:
        _STOP["deferred"] -= 1
    raise_if_stopped()


def check_target(run_dir, force):
    """Refuse a target that cannot become a run folder; returns it as a resolved absolute path.

    Checks, in order: the name (not empty, short enough for the staging name on
    this file system, and the whole path short enough for the longest file kvae
    writes inside it), that it is not a symbolic link, that the nearest existing
    ancestor is a writable directory (missing parents are created by ``reserve``),
    and that the target is free, or with ``force`` a folder kvae wrote that
    holds nothing else. The folder it names is returned with the symbolic links
    of its parents resolved, so that two names for one folder share one lock.

    Raises:
        ConfigError: the one-line reason.
    """
    run_dir = resolved(run_dir)
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
    _check_path_length(run_dir, ancestor)
    if run_dir.is_symlink():
        raise ConfigError(f"run folder {str(run_dir)!r} is a symbolic link; give a real path")
    if run_dir.exists():
        _check_replaceable(run_dir, force)
    return run_dir


def resolved(path):
    """``path`` made absolute, the symbolic links of its parents resolved; its own name kept."""
    path = pathlib.Path(os.path.abspath(path))
    if path.name in ("", ".", ".."):
        return path
    return pathlib.Path(os.path.realpath(path.parent)) / path.name


def _check_path_length(run_dir, ancestor):
    """The longest path kvae creates (a figure's temporary name in staging) must fit PATH_MAX."""
    limit = os.pathconf(ancestor, "PC_PATH_MAX") - 1  # PC_PATH_MAX counts the final NUL
    length = len(os.fsencode(str(run_dir)))
    inside = STAGING_EXTRA + 1 + max(len(name) for name in PLANNED_FILES) + PARTIAL_EXTRA
    if length + inside > limit:
        raise ConfigError(
            f"run folder path is too long: {length} bytes, and the files kvae writes inside "
            f"its staging folder add up to {inside}, over this system's {limit}; give a path "
            f"of at most {limit - inside} bytes"
        )


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
    path = pathlib.Path(run_dir) / MARKER_FILE
    if path.is_symlink():  # kvae writes its marker as a plain file
        return None
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # RecursionError: nested thousands deep
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


def write_marker(run_dir, run_id, files=None):
    """Write ``kvae-run.json``: the run id and ``files`` (default: the files now in ``run_dir``).

    ``files`` are relative POSIX paths; the marker itself is never listed.
    """
    files = written_files(run_dir) if files is None else files
    files = sorted(set(files) - {MARKER_FILE})
    write_json(pathlib.Path(run_dir) / MARKER_FILE, {"run_id": run_id, "files": files})


def add_to_marker(run_dir, paths):
    """List ``paths`` (files kvae just wrote under ``run_dir``) in its marker, and only those.

    The files the marker listed before stay listed while they exist; anything
    else in the folder (a user's notes, a half-written temporary file) stays
    unlisted, so ``force`` still refuses to delete it. A folder without a valid
    marker is left without one.
    """
    run_dir = pathlib.Path(run_dir)
    marker = read_marker(run_dir)
    if marker is None:
        return
    kept = [name for name in marker["files"] if os.path.lexists(run_dir / name)]
    added = [pathlib.Path(path).relative_to(run_dir).as_posix() for path in paths]
    write_marker(run_dir, marker["run_id"], [*kept, *added])


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
    with _locked(run_dir):
        check_target(run_dir, force)  # a run that held the lock may have just written it
        remove_stale_staging(run_dir)
        yield run_dir


@contextlib.contextmanager
def _locked(run_dir):
    """Hold ``.NAME.lock`` beside the resolved ``run_dir``; remove it when the block ends."""
    key = str(run_dir)
    lock_path = run_dir.with_name(f".{run_dir.name}.lock")
    descriptor = _lock(lock_path, run_dir)
    _HELD[key] = [descriptor, 1]
    try:
        yield
    finally:
        with stops_deferred():  # a second Ctrl-C must not leave the lock file behind
            del _HELD[key]
            _unlink_own(lock_path, descriptor)  # before unlocking: a waiter re-checks the inode
            os.close(descriptor)


def _lock(lock_path, run_dir):
    """Open and flock ``lock_path``; refuse at once if another process holds it.

    ``O_NOFOLLOW``: a symbolic link in the lock's place (a user's, or a trap) is
    refused, never followed, so kvae cannot write its pid into someone's file.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
    while True:
        try:
            descriptor = os.open(lock_path, flags, 0o644)
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise ConfigError(
                    f"refusing to lock {str(run_dir)!r}: {str(lock_path)!r} is a symbolic link "
                    "that kvae did not create; remove it"
                ) from None
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
            if os.lstat(lock_path).st_ino == os.fstat(descriptor).st_ino:
                _write_pid(lock_path, descriptor, run_dir)
                return descriptor
        except FileNotFoundError:
            pass
        os.close(descriptor)


def _write_pid(lock_path, descriptor, run_dir):
    """Write our pid into the lock (who holds it); a full disk gives up the lock, one line."""
    try:
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
    except OSError as error:
        _unlink_own(lock_path, descriptor)
        os.close(descriptor)
        raise ConfigError(
            f"cannot lock {str(run_dir)!r}: writing {str(lock_path)!r} failed: {error.strerror}"
        ) from None


def _unlink_own(lock_path, descriptor):
    """Remove ``lock_path`` if it is still the file ``descriptor`` holds (not a newer one)."""
    try:
        if os.lstat(lock_path).st_ino == os.fstat(descriptor).st_ino:
            os.unlink(lock_path)
    except FileNotFoundError:
        pass


def remove_stale_staging(run_dir):
    """Remove ``.NAME.partial-PID-TAG`` / ``.NAME.old-PID-TAG`` folders left by dead runs.

    Called with the lock on NAME held, so no live run is building them; the pid
    check also spares a folder whose pid a live process has since been given.
    A folder is removed only when it is empty, or when it holds a marker written
    by kvae whose run id starts with ``TAG`` and nothing but the files that
    marker lists (and their half-written ``.FILE.partial-PID-*`` temporaries).
    Any other folder of that name is left where it is, with a one-line note on
    stderr: it may be a user's.

    Returns:
        The folders left in place, as ``(path, reason)`` pairs.
    """
    run_dir = pathlib.Path(run_dir)
    prefix = f".{run_dir.name}."
    left = []
    for path in run_dir.parent.iterdir():
        if not path.name.startswith(prefix):
            continue
        match = _STAGING.fullmatch(path.name[len(prefix) :])
        if not match or _alive(int(match[1])):
            continue
        reason = _not_kvae_staging(path, int(match[1]), match[2])
        if reason is None:
            with stops_deferred():
                shutil.rmtree(path, ignore_errors=True)
            continue
        left.append((path, reason))
        print(
            f"kvae: note: left {str(path)!r} in place: {reason}; kvae removes only the staging "
            "folders it wrote itself (remove it if it is not needed)",
            file=sys.stderr,
        )
    return left


def _not_kvae_staging(path, pid, tag):
    """Why ``path`` is not a staging folder kvae left behind, or None if it is one."""
    if path.is_symlink() or not path.is_dir():
        return "it is not a folder"
    entries = _entries(path)
    if all(_temporary_of(name, [], pid) for name in entries):
        return None  # killed before its first marker was whole: empty, or a half-written marker
    marker = read_marker(path)
    if marker is None:
        return f"it has no valid {MARKER_FILE}"
    if not marker["run_id"].startswith(tag):
        return f"its {MARKER_FILE} names run {marker['run_id']!r}, not one tagged {tag!r}"
    listed = {*marker["files"], MARKER_FILE}
    unlisted = [
        name
        for name in entries
        if name not in listed and not _temporary_of(name, marker["files"], pid)
    ]
    if unlisted:
        shown = ", ".join(unlisted[:3]) + (", ..." if len(unlisted) > 3 else "")
        return f"it holds files its {MARKER_FILE} does not list: {shown}"
    return None


def _entries(folder):
    """Files and links under ``folder`` (relative POSIX paths), without following links.

    A symbolic link is an entry of its own, never a folder to look into, and
    never a file kvae wrote: it is reported under its name plus ``@``.
    """
    entries = []
    for root, dirs, names in os.walk(folder):
        relative = pathlib.Path(root).relative_to(folder)
        for name in [*dirs, *names]:
            path = pathlib.Path(root) / name
            if path.is_symlink():
                entries.append((relative / name).as_posix() + "@")
        dirs[:] = [d for d in dirs if not (pathlib.Path(root) / d).is_symlink()]
        files = [n for n in names if not (pathlib.Path(root) / n).is_symlink()]
        entries += [(relative / n).as_posix() for n in files]
    return sorted(entries)


def _temporary_of(name, files, pid):
    """Whether ``name`` is the half-written temporary (process ``pid``) of a listed file."""
    path = pathlib.PurePosixPath(name)
    for listed in (*files, MARKER_FILE):
        target = pathlib.PurePosixPath(listed)
        if target.parent != path.parent:
            continue
        for stem, suffix in ((target.name, ""), (target.stem, target.suffix)):
            pattern = rf"\.{re.escape(stem)}\.partial-{pid}-[0-9a-f]{{6}}{re.escape(suffix)}"
            if re.fullmatch(pattern, path.name):
                return True
    return False


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
    """Hold the lock of an existing run folder (``kvae figures``); yields its resolved path.

    The folder is resolved first (a symbolic link to a run locks the run itself),
    so ``kvae figures ALIAS`` and ``kvae train --force --out REAL`` exclude each other.

    Raises:
        ConfigError: ``run_dir`` is not a folder, or another kvae process holds it.
    """
    given = run_dir
    run_dir = pathlib.Path(os.path.realpath(run_dir))
    if not run_dir.is_dir():
        raise ConfigError(f"run folder {str(given)!r} does not exist")
    if run_dir.name in ("", ".", ".."):
        raise ConfigError(
            f"{str(given)!r} cannot be a run folder: kvae locks a folder by a file beside it, "
            "and the root has no parent; give the run folder itself"
        )
    key = str(run_dir)
    if key in _HELD:
        yield run_dir
        return
    with _locked(run_dir):
        yield run_dir


def read_run(run_dir):
    """Check a saved run's files before Keras loads the model; returns ``(config, history)``.

    ``model.keras`` (and ``model_2d.keras``, if there is one) must be a whole
    Keras archive, ``config.json`` a valid ``TrainConfig``, ``history.json``
    per-epoch lists of numbers of one length, and ``figures`` (if there is one) a
    real folder, not a symbolic link: kvae writes figures only where it made them.

    Raises:
        ConfigError: one line naming the file and its problem.
    """
    run_dir = pathlib.Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run folder {str(run_dir)!r} does not exist")
    for name in (MODEL_FILE, CONFIG_FILE, HISTORY_FILE):
        if not (run_dir / name).is_file():
            raise ConfigError(f"{str(run_dir)!r} is not a run folder: it has no {name}")
    check_figures_folder(run_dir / FIGURES_DIR)
    _check_archive(run_dir / MODEL_FILE)
    if os.path.lexists(run_dir / MAP_MODEL_FILE):
        _check_archive(run_dir / MAP_MODEL_FILE)
    config_path = run_dir / CONFIG_FILE
    try:
        config = TrainConfig.from_dict(_read_json(config_path))
    except (ConfigError, TypeError) as error:
        raise ConfigError(f"{str(config_path)!r} is not a valid run config: {error}") from None
    return config, _check_history(run_dir / HISTORY_FILE)


def check_figures_folder(folder):
    """Refuse a ``figures`` that is a symbolic link or not a folder (a missing one is made)."""
    folder = pathlib.Path(folder)
    if folder.is_symlink():
        raise ConfigError(
            f"refusing to write figures into {str(folder)!r}: it is a symbolic link that kvae "
            "did not create; remove the link (kvae makes the folder)"
        )
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"refusing to write figures into {str(folder)!r}: it is not a folder")


def _read_json(path):
    try:
        return json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"{str(path)!r} is not readable JSON: {error}") from None
    except RecursionError:
        raise ConfigError(
            f"{str(path)!r} is not readable JSON: nested too deeply for Python's parser"
        ) from None


def _check_archive(path):
    """A ``.keras`` file is a zip holding ``config.json`` and ``model.weights.h5``, CRCs intact.

    The central directory (names and sizes, read without reading any member) is
    checked first: at most ``MAX_ARCHIVE_MEMBERS`` members, no name twice, sizes
    that a real deflate stream could have and that fit in the file, at most
    ``MAX_ARCHIVE_BYTES`` in all. Only then are the CRCs read, so the check ends
    in seconds and reads in bounded chunks, whatever the file claims.
    """
    if pathlib.Path(path).is_symlink():
        raise ConfigError(f"{str(path)!r} is a symbolic link; kvae reads only the files it wrote")
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            _check_directory(path, members)
            names = {member.filename for member in members}
            damaged = archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError, NotImplementedError) as error:
        raise ConfigError(f"{str(path)!r} is not a Keras model archive: {error}") from None
    missing = sorted({"config.json", "model.weights.h5"} - names)
    if missing or damaged:
        problem = f"it lacks {', '.join(missing)}" if missing else f"{damaged} is damaged"
        raise ConfigError(f"{str(path)!r} is not a whole Keras model archive: {problem}")


def _check_directory(path, members):
    """Refuse what the central directory alone shows to be no Keras archive (see above)."""

    def refuse(problem):
        raise ConfigError(f"{str(path)!r} is not a Keras model archive: {problem}")

    if len(members) > MAX_ARCHIVE_MEMBERS:
        refuse(f"it lists {len(members)} members, expected at most {MAX_ARCHIVE_MEMBERS}")
    if len({member.filename for member in members}) != len(members):
        refuse("it lists a member name twice")
    size = os.path.getsize(path)
    if sum(member.compress_size for member in members) > size:
        refuse(f"its members claim more compressed bytes than the file's {size}")
    for member in members:
        ratio = MAX_DEFLATE_RATIO if member.compress_type == zipfile.ZIP_DEFLATED else 1
        if member.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            refuse(f"{member.filename} uses compression method {member.compress_type}")
        if member.file_size > max(member.compress_size, 1) * ratio:
            refuse(f"{member.filename} claims {member.file_size} bytes from {member.compress_size}")
    total = sum(member.file_size for member in members)
    if total > MAX_ARCHIVE_BYTES:
        refuse(f"its members hold {total} bytes, expected at most {MAX_ARCHIVE_BYTES}")


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
    ``force`` the old run is swapped out, then deleted. The staging folder's
    marker is written first, listing every file kvae may write
    (``PLANNED_FILES``: a killed run's folder can then be told from a user's);
    it is rewritten last, listing the files the block wrote.
    """
    run_dir = resolved(run_dir)
    # Same file system as the target, so the final rename is atomic.
    staging = run_dir.with_name(f".{run_dir.name}.partial-{os.getpid()}-{_tag(run_id)}")
    old, made = None, False
    try:
        # A stop that lands just after mkdir (still inside pathlib) must not leave the folder
        # behind unnoted: it is deferred until `made` says the clean-up below owns the folder.
        with stops_deferred():
            staging.mkdir()  # unlike tempfile.mkdtemp, keeps the umask's permissions (not 0700)
            made = True
        write_marker(staging, run_id, PLANNED_FILES)
        yield staging
        # Library code that catches every exception can swallow the Terminated that a
        # signal raised mid-write; the folder may then lack a file, so it is not renamed.
        raise_if_stopped()
        write_marker(staging, run_id)
        check_target(run_dir, force)
        if run_dir.exists():
            old = _swapped_out_name(run_dir)
            os.rename(run_dir, old)
        os.rename(staging, run_dir)
    except BaseException:
        with stops_deferred():  # a second signal must not cut the clean-up in half
            if made:  # never a folder of that name that this run did not make
                shutil.rmtree(staging, ignore_errors=True)
            if old is not None and not run_dir.exists():
                os.rename(old, run_dir)  # the swap failed half-way: put the old run back
        raise
    if old is not None:
        with stops_deferred():
            shutil.rmtree(old, ignore_errors=True)


def _tag(run_id):
    """The run id's first six digits, which name its staging folder (random if it has none)."""
    tag = run_id[:TAG_DIGITS]
    return tag if re.fullmatch("[0-9a-f]{6}", tag) else secrets.token_hex(3)


def _swapped_out_name(run_dir):
    """``.NAME.old-PID-TAG``, TAG from the old run's own id (checked by ``_check_replaceable``)."""
    marker = read_marker(run_dir)
    tag = _tag(marker["run_id"]) if marker else secrets.token_hex(3)
    return run_dir.with_name(f".{run_dir.name}.old-{os.getpid()}-{tag}")


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
