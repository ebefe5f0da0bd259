"""Folders that cannot be written, for the run-folder and command-line tests."""

import os
import subprocess


def immutable(path):
    """A folder no one may write into: immutable for root (chattr +i), read-only otherwise."""
    path.mkdir()
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(path)], check=True)
    else:
        path.chmod(0o555)
    return path


def writable_again(path):
    """Undo ``immutable``, so pytest can remove the folder."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(path)], check=True)
    path.chmod(0o755)
