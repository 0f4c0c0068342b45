"""Model-side Keras layers (keras.ops only) and block functions."""

from keras_asc.layers.blocks import (
    cp_mobile_block,
    cp_resnet_basic_block,
    make_divisible,
    mofle_block,
)
from keras_asc.layers.convolution import Conv2D, DepthwiseConv2D
from keras_asc.layers.frontend import LogMelSpectrogram
from keras_asc.layers.normalization import ChannelShuffle, GlobalResponseNormalization
