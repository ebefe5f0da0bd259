"""kvae.callbacks: the NaN stop and its tracker live here; the old import paths still work."""

import keras
import numpy as np
from conftest import to_numpy

import kvae
import kvae.models
from kvae.callbacks import CheckAfterEachBatch, FirstNonFiniteBatch, StopOnNaN


def test_the_nan_stop_lives_in_callbacks_and_models_still_exports_it():
    assert StopOnNaN.__module__ == FirstNonFiniteBatch.__module__ == "kvae.callbacks"
    assert kvae.models.StopOnNaN is kvae.callbacks.StopOnNaN
    assert kvae.models.FirstNonFiniteBatch is kvae.callbacks.FirstNonFiniteBatch


def test_the_tracker_records_the_first_non_finite_batch_and_resets_to_none():
    tracker = FirstNonFiniteBatch()
    for losses in ([1.0, 2.0], [1.0, np.nan], [np.inf, 1.0]):  # batches 0, 1, 2
        tracker.update_state(keras.ops.convert_to_tensor(np.array(losses, "float32")))
    assert to_numpy(tracker.result())[0] == 1.0
    tracker.reset_state()
    assert to_numpy(tracker.result())[0] == -1.0


def test_a_check_after_each_batch_runs_after_every_batch_and_can_stop_fit():
    calls = []

    def check():  # stands in for kvae.rundir.raise_if_stopped after a swallowed Ctrl-C
        calls.append(len(calls))
        if len(calls) == 3:
            raise KeyboardInterrupt

    vae = kvae.VAE(kvae.build_encoder(2, hidden=(16,)), kvae.build_decoder(2, hidden=(16,)))
    vae.compile(optimizer="adam", steps_per_execution=1)
    digits = kvae.load_mnist("test")[0][:128]
    try:
        vae.fit(digits, epochs=1, batch_size=16, verbose=0, callbacks=[CheckAfterEachBatch(check)])
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("fit ran on past the check that raised")
    assert calls == [0, 1, 2]  # one check per batch, and none after the stop
