"""Model-side Keras layers (keras.ops only): the front-end, GRN, the shuffle and the blocks."""

from keras_asc.layers.blocks import (
    Block,
    CPMobileBlock,
    CPResNetBasicBlock,
    MofleBlock,
    leaf_layers,
    make_divisible,
)
from keras_asc.layers.convolution import Conv2D, DepthwiseConv2D
from keras_asc.layers.frontend import LogMelSpectrogram
from keras_asc.layers.normalization import (
    BatchNormalization,
    ChannelShuffle,
    GlobalResponseNormalization,
)
