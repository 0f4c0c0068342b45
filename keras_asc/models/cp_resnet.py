"""The CP-ResNet backbone: the receptive-field-regularised ResNet."""

import keras

from keras_asc.layers.blocks import CPResNetBasicBlock, conv_bn, conv_kernel_initializer
from keras_asc.models.backbone import Backbone, classifier_head, spectrogram_input

# Kernel sizes (k1, k2) per block and stage for receptive-field parameter rho = 8:
# stage 1: (3, 1), (3, 3); stage 2: (3, 3); stage 3: (3, 1).
RHO8_KERNEL_SIZES = (((3, 1), (3, 3)), ((3, 3),), ((3, 1),))


def _pool(x, pool_size, name):
    return keras.layers.MaxPooling2D(pool_size, strides=pool_size, padding="valid", name=name)(x)


@keras.saving.register_keras_serializable(package="keras_asc")
class CPResNetBackbone(Backbone):
    """CP-ResNet with three stages of ``CPResNetBasicBlock``, on log-mel spectrograms.

    A 5x5 stride-2 stem (padding 1) and 2x2 max pooling, stage 1 with 2x1 max pooling after each
    block, a grouped stage 2, stage 3, a 1x1 convolution head and global average pooling. Stage
    widths are ``[b, int(b * m) - cut2, int(b * m**2) - cut3]``. ``extra_pooling`` adds the two
    pools of the report's CP-ResNet59 (2x1 before stage 2, 1x2 before stage 3) that halve its
    MACs.

    Args:
        num_classes: number of scenes.
        spectrogram_shape: (mel bins, frames, 1) of the input log-mels (hop 750 gives 256 x 43).
        base_channels: stage 1 width ``b``.
        channels_multiplier: ``m``.
        stage2_channel_cut: ``cut2``, subtracted from the stage 2 width.
        stage3_channel_cut: ``cut3``, subtracted from the stage 3 width.
        stage2_groups: groups of every stage 2 convolution.
        kernel_sizes: per stage, per block, ``(k1, k2)``; the default is rho = 8.
        extra_pooling: add the report's two extra pooling layers.

    Example:
        >>> backbone = CPResNetBackbone()  # CP-ResNet59
        >>> logits = backbone(keras.ops.zeros((1, 256, 43, 1)))

    Reference:
        Koutini et al., "Receptive field regularization techniques for audio classification
        and tagging with deep convolutional neural networks", IEEE/ACM TASLP 2021.
    """

    def __init__(
        self,
        num_classes=10,
        spectrogram_shape=(256, 43, 1),
        base_channels=32,
        channels_multiplier=1.4,
        stage2_channel_cut=0,
        stage3_channel_cut=36,
        stage2_groups=2,
        kernel_sizes=RHO8_KERNEL_SIZES,
        extra_pooling=True,
        name="cp_resnet",
        **kwargs,
    ):
        kernel_sizes = tuple(tuple(tuple(int(k) for k in block) for block in stage) for stage in kernel_sizes)
        if len(kernel_sizes) != 3 or any(len(block) != 2 for stage in kernel_sizes for block in stage):
            raise ValueError(
                f"kernel_sizes must give (k1, k2) for each block of 3 stages. Received: kernel_sizes={kernel_sizes}"
            )
        widths = [
            base_channels,
            int(base_channels * channels_multiplier) - stage2_channel_cut,
            int(base_channels * channels_multiplier**2) - stage3_channel_cut,
        ]
        if min(widths) < 1 or widths[1] % stage2_groups or widths[0] % stage2_groups:
            raise ValueError(
                f"Stage widths {widths} must be positive and stage 1-2 widths divisible by "
                f"stage2_groups={stage2_groups}."
            )

        # === Functional model ===
        inputs = spectrogram_input(spectrogram_shape, num_classes)
        # Initialisation as the reference: He-normal fan-in, then Fixup-style blocks (see
        # CPResNetBasicBlock) with L = the number of blocks, and a zero classifier.
        depth = sum(len(stage) for stage in kernel_sizes)
        x = conv_bn(
            inputs,
            base_channels,
            5,
            strides=2,
            padding=1,
            kernel_initializer=conv_kernel_initializer("fan_in"),
            name=f"{name}_stem",
        )
        x = _pool(x, (2, 2), f"{name}_stem_pool")
        for index, block_kernels in enumerate(kernel_sizes[0], start=1):
            x = CPResNetBasicBlock(
                widths[0],
                block_kernels,
                fixup_depth=depth,
                name=f"{name}_stage1_block{index}",
            )(x)
            x = _pool(x, (2, 1), f"{name}_stage1_block{index}_pool")
        if extra_pooling:
            x = _pool(x, (2, 1), f"{name}_stage2_pool")
        for index, block_kernels in enumerate(kernel_sizes[1], start=1):
            x = CPResNetBasicBlock(
                widths[1],
                block_kernels,
                groups=stage2_groups,
                fixup_depth=depth,
                name=f"{name}_stage2_block{index}",
            )(x)
        if extra_pooling:
            x = _pool(x, (1, 2), f"{name}_stage3_pool")
        for index, block_kernels in enumerate(kernel_sizes[2], start=1):
            x = CPResNetBasicBlock(
                widths[2],
                block_kernels,
                fixup_depth=depth,
                name=f"{name}_stage3_block{index}",
            )(x)
        outputs = classifier_head(x, num_classes, name, kernel_initializer="zeros")
        super().__init__(
            inputs=inputs, outputs=outputs, num_classes=num_classes, spectrogram_shape=spectrogram_shape,
            name=name, **kwargs,
        )

        # === Config ===
        self.base_channels = base_channels
        self.channels_multiplier = channels_multiplier
        self.stage2_channel_cut = stage2_channel_cut
        self.stage3_channel_cut = stage3_channel_cut
        self.stage2_groups = stage2_groups
        self.kernel_sizes = kernel_sizes
        self.extra_pooling = extra_pooling

    def get_config(self):
        return {
            **super().get_config(),
            "base_channels": self.base_channels,
            "channels_multiplier": self.channels_multiplier,
            "stage2_channel_cut": self.stage2_channel_cut,
            "stage3_channel_cut": self.stage3_channel_cut,
            "stage2_groups": self.stage2_groups,
            "kernel_sizes": [[list(block) for block in stage] for stage in self.kernel_sizes],
            "extra_pooling": self.extra_pooling,
        }
