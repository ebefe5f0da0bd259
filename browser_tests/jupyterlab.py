"""A throwaway JupyterLab server on localhost for the browser checks.

The chapters are copied into a temporary folder and JupyterLab serves that copy, so running
their cells can never rewrite the committed notebooks or their paired `.md` files. Settings,
workspaces, runtime files and configuration are private to the run as well.
"""

import contextlib
import json
import os
import pathlib
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from browser_tests.chromium import ROOT

# Every cell stays in the page (no windowing), nothing is saved, no news is fetched.
SETTINGS = {
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    "@jupyterlab/apputils-extension/notification": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_settings(folder):
    for plugin, values in SETTINGS.items():
        path = folder / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


def _wait_until_up(url, process, timeout, log):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"JupyterLab exited with status {process.returncode} at start-up:\n"
                + log.read_text(errors="replace")[-3000:]
            )
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        time.sleep(0.5)
    raise TimeoutError(f"JupyterLab did not answer {url} within {timeout} s")


@contextlib.contextmanager
def jupyterlab(chapters, timeout=120):
    """Runs JupyterLab on a copy of `chapters`; yields (base_url, token, folder).

    Args:
        chapters: the folder to copy (the repository's `chapters/`).
        timeout: seconds to wait for the server to answer.

    Yields:
        The server's base URL, its token, and the folder it serves.
    """
    work = pathlib.Path(tempfile.mkdtemp(prefix="kvae-lab-"))
    served = work / "chapters"
    shutil.copytree(chapters, served, ignore=shutil.ignore_patterns("*.md", ".ipynb_checkpoints"))
    _write_settings(work / "settings")
    port, token = free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "jax"),
        "JUPYTER_CONFIG_DIR": str(work / "config"),
        "JUPYTER_RUNTIME_DIR": str(work / "runtime"),
    }
    env.pop("MPLBACKEND", None)  # figures must come through the inline backend
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={served}",
        "--LabApp.expose_app_in_browser=True", "--allow-root",
        f"--LabApp.user_settings_dir={work / 'settings'}",
        f"--LabApp.workspaces_dir={work / 'workspaces'}",
    ]  # fmt: skip
    log = open(work / "jupyterlab.log", "wb")  # noqa: SIM115 (closed in finally)
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        log_path = work / "jupyterlab.log"
        _wait_until_up(f"{base}/api/status?token={token}", process, timeout, log_path)
        yield base, token, served
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        shutil.rmtree(work, ignore_errors=True)
