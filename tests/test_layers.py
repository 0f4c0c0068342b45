"""Every public layer through the shared keras-hub-style check (tests/helpers.run_layer_test),
on the backend this run uses; the block layers also against their structure and counts."""

import keras
import numpy as np
import pytest
from helpers import run_layer_test

from keras_asc import complexity
from keras_asc.augment import FreqMixStyle
from keras_asc.layers import (
    ChannelShuffle,
    Conv2D,
    CPMobileBlock,
    CPResNetBasicBlock,
    DepthwiseConv2D,
    GlobalResponseNormalization,
    LogMelSpectrogram,
    MofleBlock,
)


@pytest.mark.parametrize(
    "layer_class, init_kwargs, input_shape, output_shape, num_trainable",
    [
        # Strided D block: no residual (32 -> 56 channels); 3 convolutions + 3 BN x 2 + GRN 2 = 11 weights.
        (MofleBlock, {"out_channels": 56, "expansion_channels": 80, "strides": [2, 1], "name": "mofle_d"},
         (None, 16, 8, 32), (None, 8, 8, 56), 11),
        # Standard S block with the identity residual.
        (MofleBlock, {"out_channels": 32, "expansion_channels": 80, "name": "mofle_s"},
         (None, 16, 8, 32), (None, 16, 8, 32), 11),
        # Strided residual: 3x3 average-pool shortcut, no GRN.
        (CPMobileBlock, {"out_channels": 32, "expansion_channels": 64, "strides": [2, 2], "name": "cpm"},
         (None, 16, 8, 32), (None, 8, 4, 32), 9),
        # Width change: 1x1 grouped shortcut convolution + BN.
        (CPResNetBasicBlock, {"out_channels": 44, "kernel_sizes": [3, 3], "groups": 2, "fixup_depth": 4,
                              "name": "cpr"}, (None, 7, 10, 32), (None, 7, 10, 44), 9),
        (GlobalResponseNormalization, {"epsilon": 1e-6, "name": "grn"}, (None, 4, 3, 6), (None, 4, 3, 6), 2),
        (Conv2D, {"filters": 6, "kernel_size": [3, 3], "groups": 2, "name": "gconv"}, (None, 9, 7, 8), (None, 7, 5, 6), 2),
        (DepthwiseConv2D, {"kernel_size": [3, 3], "strides": [2, 1], "name": "dw"}, (None, 9, 7, 8), (None, 4, 5, 8), 2),
    ],
)
def test_public_layer(layer_class, init_kwargs, input_shape, output_shape, num_trainable, tmp_path):
    run_layer_test(
        layer_class, init_kwargs, input_shape, output_shape, tmp_path, expected_num_trainable_weights=num_trainable
    )


@pytest.mark.parametrize(
    "layer_class, init_kwargs, input_shape, output_shape",
    [
        (ChannelShuffle, {"groups": 2, "name": "shuffle"}, (None, 4, 3, 6), (None, 4, 3, 6)),
        (LogMelSpectrogram, {"hop_length": 500, "name": "logmel"}, (None, 32000), (None, 256, 64, 1)),
        (FreqMixStyle, {"alpha": 0.4, "p": 0.8, "seed": 1, "name": "mixstyle"}, (None, 16, 8, 1), (None, 16, 8, 1)),
    ],
)
def test_public_layer_without_weights(layer_class, init_kwargs, input_shape, output_shape, tmp_path):
    run_layer_test(layer_class, init_kwargs, input_shape, output_shape, tmp_path, trains=False)


def test_blocks_in_a_users_model_are_counted_sub_layer_by_sub_layer():
    model = keras.Sequential(
        [
            keras.Input((64, 16, 32)),
            MofleBlock(32, 80, strides=(2, 1), name="b1"),
            CPResNetBasicBlock(48, (3, 1), name="b2"),
        ]
    )
    rows = {row.name: row for row in complexity.profile(model).layers}
    # 1x1 grouped expansion 32 -> 80 in 2 groups: 16 * 80 weights at 64 x 16 positions.
    assert rows["b1_expand_conv"].params == 16 * 80
    assert rows["b1_expand_conv"].macs == 16 * 80 * 64 * 16
    # The (2, 1)-strided depthwise 3x3 runs at 32 x 16 positions.
    assert rows["b1_depthwise_conv"].output_shape == (None, 32, 16, 80)
    assert rows["b1_depthwise_conv"].macs == 9 * 80 * 32 * 16
    assert rows["b1_shortcut_pool"].output_shape == (None, 32, 16, 32)
    # CP-ResNet block with a width change has the 1x1 shortcut convolution; k1 = 3, k2 = 1.
    assert rows["b2_shortcut_conv"].params == 32 * 48
    assert rows["b2_conv2_conv"].params == 48 * 48
    assert complexity.profile(model).params == model.count_params() - sum(
        int(np.prod(w.shape)) for w in model.non_trainable_weights
    )


def test_block_arguments_are_checked_early():
    with pytest.raises(ValueError, match="divisible by pointwise_groups=2"):
        MofleBlock(32, 81)
    with pytest.raises(ValueError, match="strides must be"):
        MofleBlock(32, 80, strides=(2, 0))
    with pytest.raises(ValueError, match="fixup_depth must be a positive integer"):
        CPResNetBasicBlock(32, (3, 3), fixup_depth=0)
    with pytest.raises(ValueError, match="input channels \\(30\\) must be divisible by groups=4"):
        CPResNetBasicBlock(32, (3, 3), groups=4)(np.zeros((1, 8, 8, 30), "float32"))
