"""kvae's contenders of the throughput benchmark: ``kvae.VAE.fit`` under the process's backend.

``kvae-jax``, ``kvae-tensorflow``, ``kvae-torch`` as Keras compiles them by default;
``kvae-tensorflow-xla`` with ``compile(jit_compile=True)``. ``KERAS_BACKEND`` is set by the
driver before this process starts.
"""

import time

from throughput_common import HIDDEN, LATENT_DIM


def run_kvae(x_train, x_test, args):
    import keras

    import kvae

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds, self.cpu_seconds = [], []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = (time.perf_counter(), time.process_time())

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.start[0])
            self.cpu_seconds.append(time.process_time() - self.start[1])

    keras.utils.set_random_seed(args.seed)
    encoder = kvae.build_encoder(LATENT_DIM, hidden=(HIDDEN,))
    decoder = kvae.build_decoder(LATENT_DIM, hidden=(HIDDEN,))
    vae = kvae.VAE(encoder, decoder, seed=args.seed)
    # kvae-tensorflow-xla asks for XLA, which Keras's "auto" leaves off on a CPU.
    jit_compile = True if args.worker.endswith("-xla") else "auto"
    vae.compile(optimizer=keras.optimizers.Adam(args.learning_rate), jit_compile=jit_compile)
    timer = EpochTimer()
    vae.fit(
        x_train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        shuffle=True,
        verbose=0,
        callbacks=[timer],
    )
    logs = vae.evaluate(x_test, batch_size=args.batch_size, verbose=0, return_dict=True)
    return timer.seconds, timer.cpu_seconds, float(logs["loss"]), keras.backend.backend()
