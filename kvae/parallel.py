"""Data parallelism on Keras's own engine: one batch split across several devices.

``data_parallel(devices)`` is the scope ``kvae.train.fit`` builds and trains a
model in. With ``devices > 1`` it is ``keras.distribution.DataParallel``'s:
every variable is replicated on each device, each batch is cut into equal
shares along its first axis, and JAX's compiler turns the step into one
program over all of them. The step still computes the loss, its gradient and
the noise ``eps`` of the whole batch, as on one device; only the order of the
float32 sums changes. Keras does this under JAX only
(``kvae.config.PARALLEL_BACKENDS``).

The scope sets back the distribution that was set before it (none, unless the
caller set one), so a notebook is left as it was. A model trained inside keeps
its replicated variables: it evaluates, predicts and saves outside the scope,
and its ``.keras`` file loads on one device under any backend.

A run of several processes (``jax.distributed``, one per host) is the caller's
to set up: ``devices`` counts one process's devices and is refused there, and
README.md shows the script (each process brings its share of the digits).
"""

import contextlib

import keras

from kvae.config import ConfigError, require_parallel_backend

# What makes a CPU look like several devices to JAX, for trying this without accelerators.
VIRTUAL_DEVICES_FLAG = "XLA_FLAGS=--xla_force_host_platform_device_count=N"


def data_parallel(devices):
    """The scope to build and train a model in: ``DataParallel`` over ``devices`` devices.

    Example:

    >>> with data_parallel(2):
    ...     vae = kvae.train.build_vae(config)
    ...     vae.fit(x_train, batch_size=128)  # 64 digits on each device

    Args:
        devices: how many devices of this process share each batch; 1 gives an
            empty scope, and whatever distribution is set (none, by default)
            stays in force.

    Raises:
        ConfigError: ``devices > 1`` on a backend other than JAX, more devices
            than Keras sees, or a run of several processes (``jax.distributed``).
    """
    if devices == 1:
        return contextlib.nullcontext()
    return distribution(devices).scope()


def check(devices):
    """Refuse, before any work, the ``devices`` that ``data_parallel`` would refuse."""
    if devices > 1:
        distribution(devices)


def distribution(devices):
    """``keras.distribution.DataParallel`` over the first ``devices`` devices Keras sees.

    Raises:
        ConfigError: as ``data_parallel``.
    """
    require_parallel_backend(devices, keras.backend.backend())
    seen = keras.distribution.list_devices()
    if devices > len(seen):
        raise ConfigError(
            f"devices={devices}, but Keras sees {len(seen)} device"
            f"{'s' if len(seen) != 1 else ''} ({', '.join(seen)}); on a CPU, set "
            f"{VIRTUAL_DEVICES_FLAG} before JAX starts to split it into N virtual devices",
            "devices",
        )
    parallel = keras.distribution.DataParallel(devices=seen[:devices])
    if parallel.num_processes > 1:
        # Keras would then want each process's own share of the data, as a tf.data
        # pipeline it cuts itself, or from the caller with auto_shard_dataset=False.
        raise ConfigError(
            f"devices={devices} splits batches among one process's devices, but this run "
            f"has {parallel.num_processes} processes (jax.distributed); set a "
            "keras.distribution.DataParallel(auto_shard_dataset=False) yourself, give "
            "each process its share of the digits and keep devices=1 (README.md)",
            "devices",
        )
    return parallel
