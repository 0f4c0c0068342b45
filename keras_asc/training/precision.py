"""Training precision: float32, or Keras' mixed-precision dtype policy.

``"mixed"`` builds the model under ``mixed_float16`` where a GPU is visible (with Keras' loss
scaling, which ``Model.compile`` adds for that policy) and ``mixed_bfloat16`` on a CPU, whose
float16 arithmetic is slow and which needs no loss scaling with bfloat16. Variables stay
float32 in both. The parts whose reductions lose too much in 16 bits compute in float32
whatever the policy: the log-mel front-end (STFT, power, mel filter bank, log), the global
response normalisation's norms, Freq-MixStyle's statistics, batch normalisation's moments
(Keras) and the loss.
"""

import contextlib

import keras

PRECISIONS = ("float32", "mixed")


def check_precision(precision):
    if precision not in PRECISIONS:
        raise ValueError(
            f"precision must be one of {', '.join(PRECISIONS)}. Received: precision={precision!r}"
        )
    return precision


def mixed_policy_name():
    """``"mixed_float16"`` where Keras' backend sees a GPU, else ``"mixed_bfloat16"``."""
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        gpu = torch.cuda.is_available()
    else:
        try:
            gpu = bool(keras.distribution.list_devices("gpu"))
        except (AttributeError, RuntimeError, ValueError):  # JAX raises when it has no GPU
            gpu = False
    return "mixed_float16" if gpu else "mixed_bfloat16"


@contextlib.contextmanager
def precision_scope(precision):
    """Layers created inside take the dtype policy of ``precision``; the global policy is
    restored on leaving."""
    check_precision(precision)
    if precision == "float32":
        yield "float32"
        return
    previous = keras.config.dtype_policy()
    name = mixed_policy_name()
    keras.config.set_dtype_policy(name)
    try:
        yield name
    finally:
        keras.config.set_dtype_policy(previous)
