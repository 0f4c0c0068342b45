"""The report's training augmentations.

Waveform augmentations (``WaveformAugmentation`` subclasses, TensorFlow ops) run batch-wise in the
tf.data training pipeline: ``DeviceImpulseResponse`` then ``TimeRoll``. ``FreqMixStyle`` is a
Keras layer on log-mel batches, identity at inference.
"""

from keras_asc.augment.base import WaveformAugmentation
from keras_asc.augment.impulse_response import DeviceImpulseResponse
from keras_asc.augment.mixstyle import FreqMixStyle
from keras_asc.augment.roll import TimeRoll

__all__ = ["DeviceImpulseResponse", "FreqMixStyle", "TimeRoll", "WaveformAugmentation"]
