"""CP-ResNet: the receptive-field-regularised ResNet."""

import keras

from keras_asc.layers.blocks import conv_bn, conv_kernel_initializer, cp_resnet_basic_block
from keras_asc.models.base import (
    classifier_head,
    input_config,
    spectrogram_input,
    validate_common,
)

# Kernel sizes (k1, k2) per block and stage for receptive-field parameter rho = 8:
# stage 1: (3, 1), (3, 3); stage 2: (3, 3); stage 3: (3, 1).
RHO8_KERNEL_SIZES = (((3, 1), (3, 3)), ((3, 3),), ((3, 1),))


def _pool(x, pool_size, name):
    return keras.layers.MaxPooling2D(pool_size, strides=pool_size, padding="valid", name=name)(x)


@keras.saving.register_keras_serializable(package="keras_asc")
class CPResNet(keras.Model):
    """CP-ResNet with three stages of basic blocks.

    A 5x5 stride-2 stem (padding 1) and 2x2 max pooling, stage 1 with 2x1 max pooling after each
    block, a grouped stage 2, stage 3, a 1x1 convolution head and global average pooling. Stage
    widths are ``[b, int(b * m) - cut2, int(b * m**2) - cut3]``. ``extra_pooling`` adds the two
    pools of the report's CP-ResNet59 (2x1 before stage 2, 1x2 before stage 3) that halve its
    MACs.

    Args:
        num_classes: number of scenes.
        base_channels: stage 1 width ``b``.
        channels_multiplier: ``m``.
        stage2_channel_cut: ``cut2``, subtracted from the stage 2 width.
        stage3_channel_cut: ``cut3``, subtracted from the stage 3 width.
        stage2_groups: groups of every stage 2 convolution.
        kernel_sizes: per stage, per block, ``(k1, k2)``; the default is rho = 8.
        extra_pooling: add the report's two extra pooling layers.
        include_frontend: take waveforms and compute log-mels inside the model.
        num_samples: waveform length (32,000 for a 1-s clip at 32 kHz).
        frontend_config: ``LogMelSpectrogram`` arguments (hop 750 gives 256 x 43).
        spectrogram_augmentations: layers between front-end and network (training only).

    Example:
        >>> model = CPResNet()  # CP-ResNet59
        >>> logits = model(keras.ops.zeros((1, 32000)))

    Reference:
        Koutini et al., "Receptive field regularization techniques for audio classification
        and tagging with deep convolutional neural networks", IEEE/ACM TASLP 2021.
    """

    def __init__(
        self,
        num_classes=10,
        base_channels=32,
        channels_multiplier=1.4,
        stage2_channel_cut=0,
        stage3_channel_cut=36,
        stage2_groups=2,
        kernel_sizes=RHO8_KERNEL_SIZES,
        extra_pooling=True,
        include_frontend=True,
        num_samples=32000,
        frontend_config=None,
        spectrogram_augmentations=None,
        name="cp_resnet",
        **kwargs,
    ):
        validate_common(num_classes, num_samples)
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
        frontend_config = {"hop_length": 750} if frontend_config is None else frontend_config

        # === Functional model ===
        inputs, x, frontend, augmentation_layers = spectrogram_input(
            include_frontend=include_frontend,
            num_samples=num_samples,
            frontend_config=frontend_config,
            spectrogram_augmentations=spectrogram_augmentations,
            name=name,
        )
        # Initialisation as the reference: He-normal fan-in, then Fixup-style blocks (see
        # cp_resnet_basic_block) with L = the number of blocks, and a zero classifier.
        depth = sum(len(stage) for stage in kernel_sizes)
        x = conv_bn(
            x,
            base_channels,
            5,
            strides=2,
            padding=1,
            kernel_initializer=conv_kernel_initializer("fan_in"),
            name=f"{name}_stem",
        )
        x = _pool(x, (2, 2), f"{name}_stem_pool")
        for index, block_kernels in enumerate(kernel_sizes[0], start=1):
            x = cp_resnet_basic_block(
                x, widths[0], block_kernels, fixup_depth=depth, name=f"{name}_stage1_block{index}"
            )
            x = _pool(x, (2, 1), f"{name}_stage1_block{index}_pool")
        if extra_pooling:
            x = _pool(x, (2, 1), f"{name}_stage2_pool")
        for index, block_kernels in enumerate(kernel_sizes[1], start=1):
            x = cp_resnet_basic_block(
                x,
                widths[1],
                block_kernels,
                groups=stage2_groups,
                fixup_depth=depth,
                name=f"{name}_stage2_block{index}",
            )
        if extra_pooling:
            x = _pool(x, (1, 2), f"{name}_stage3_pool")
        for index, block_kernels in enumerate(kernel_sizes[2], start=1):
            x = cp_resnet_basic_block(
                x, widths[2], block_kernels, fixup_depth=depth, name=f"{name}_stage3_block{index}"
            )
        outputs = classifier_head(x, num_classes, name, kernel_initializer="zeros")
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)

        # === Config ===
        self.num_classes = num_classes
        self.base_channels = base_channels
        self.channels_multiplier = channels_multiplier
        self.stage2_channel_cut = stage2_channel_cut
        self.stage3_channel_cut = stage3_channel_cut
        self.stage2_groups = stage2_groups
        self.kernel_sizes = kernel_sizes
        self.extra_pooling = extra_pooling
        self.include_frontend = include_frontend
        self.num_samples = num_samples
        self.frontend_config = dict(frontend_config)
        self.frontend = frontend
        self.augmentation_layers = augmentation_layers

    def get_config(self):
        return {
            **input_config(self),
            "base_channels": self.base_channels,
            "channels_multiplier": self.channels_multiplier,
            "stage2_channel_cut": self.stage2_channel_cut,
            "stage3_channel_cut": self.stage3_channel_cut,
            "stage2_groups": self.stage2_groups,
            "kernel_sizes": [[list(block) for block in stage] for stage in self.kernel_sizes],
            "extra_pooling": self.extra_pooling,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
