"""Run ``kvae train`` again and again in one process, for ``test_signals.py``; run as a script.

    python tests/signal_driver.py FD ARGS...

For each line ``OUT`` read from stdin it writes ``start`` to the descriptor
``FD``, runs ``kvae.cli.main(["train", *ARGS, "--out", OUT])`` (the command
itself, handlers and all), and writes ``status S late L``. Keras and JAX load
once, so each run costs only its own work and the test can afford a signal at
a random moment of many runs. ``L`` counts signals that reached the driver
outside a run (sent as a run was ending): the test does not count those as
deliveries to a run. A line ``OUT EPOCHS`` overrides ``--epochs``.
"""

import os
import signal
import sys
import time

from kvae import cli, rundir

SETTLE_SECONDS = 0.3  # a signal sent just as a run ended arrives within this


def main():
    channel = os.fdopen(int(sys.argv[1]), "w", buffering=1)
    args = sys.argv[2:]
    late = []
    # Between runs SIGTERM only counts; kvae.cli installs its own handler during each run.
    signal.signal(signal.SIGTERM, lambda signum, frame: late.append(signum))
    for line in sys.stdin:
        out, *epochs = line.split()
        late.clear()
        channel.write("start\n")
        status = "late"
        try:
            try:
                status = cli.main(
                    ["train", *args, *(["--epochs", *epochs] if epochs else []), "--out", out]
                )
            except SystemExit as exit_:
                status = exit_.code
            except (KeyboardInterrupt, rundir.Terminated):  # outside the command's handling
                late.append("raised")
            time.sleep(SETTLE_SECONDS)
        except KeyboardInterrupt:  # SIGINT between runs: Python's own handler
            late.append(signal.SIGINT)
        channel.write(f"status {status} late {len(late)}\n")


if __name__ == "__main__":
    main()
