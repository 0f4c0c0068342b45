"""The CP-Mobile backbone; MofleNet (models/moflenet.py) shares its network builder."""

import keras

from keras_asc.layers.blocks import CPMobileBlock, MofleBlock, conv_bn, make_divisible
from keras_asc.models.backbone import Backbone, classifier_head, spectrogram_input


def _stage_widths(base_channels, channels_multiplier, num_stages):
    return [base_channels] + [
        make_divisible(base_channels * channels_multiplier**stage, 8) for stage in range(1, num_stages)
    ]


def _parse_strides(block_strides, num_blocks):
    strides = {}
    for key, value in dict(block_strides).items():
        index = int(key)
        if not 1 <= index <= num_blocks:
            raise ValueError(
                f"block_strides keys must be block numbers 1..{num_blocks}. Received: {key!r}"
            )
        strides[index] = tuple(value) if not isinstance(value, int) else (value, value)
    return strides


class _MobileBackbone(Backbone):
    """Stem, stages of inverted-residual blocks and the head; shared by CP-Mobile and MofleNet."""

    def __init__(
        self,
        *,
        num_classes,
        spectrogram_shape,
        base_channels,
        channels_multiplier,
        expansion_rate,
        blocks_per_stage,
        block_strides,
        use_grn,
        pointwise_groups,
        name,
        **kwargs,
    ):
        if base_channels % 4:
            raise ValueError(f"base_channels must be divisible by 4. Received: base_channels={base_channels}")
        blocks_per_stage = tuple(int(n) for n in blocks_per_stage)
        strides = _parse_strides(block_strides, sum(blocks_per_stage))
        widths = _stage_widths(base_channels, channels_multiplier, len(blocks_per_stage))

        # === Functional model ===
        inputs = spectrogram_input(spectrogram_shape, num_classes)
        x = conv_bn(inputs, base_channels // 4, 3, strides=2, padding=1, name=f"{name}_stem1")
        x = conv_bn(x, base_channels, 3, strides=2, padding=1, name=f"{name}_stem2")
        block_index = 0
        for stage, (num_stage_blocks, width) in enumerate(zip(blocks_per_stage, widths, strict=True), start=1):
            for _ in range(num_stage_blocks):
                block_index += 1
                options = {
                    "out_channels": width,
                    "expansion_channels": make_divisible(x.shape[-1] * expansion_rate, 8),
                    "strides": strides.get(block_index, (1, 1)),
                    "use_grn": use_grn,
                    "name": f"{name}_stage{stage}_block{block_index}",
                }
                if pointwise_groups is None:
                    x = CPMobileBlock(**options)(x)
                else:
                    x = MofleBlock(pointwise_groups=pointwise_groups, **options)(x)
        outputs = classifier_head(x, num_classes, name)
        super().__init__(
            inputs=inputs, outputs=outputs, num_classes=num_classes, spectrogram_shape=spectrogram_shape,
            name=name, **kwargs,
        )

        # === Config ===
        self.base_channels = base_channels
        self.channels_multiplier = channels_multiplier
        self.expansion_rate = expansion_rate
        self.blocks_per_stage = blocks_per_stage
        self.block_strides = {str(k): list(v) for k, v in sorted(strides.items())}
        self.use_grn = use_grn

    def get_config(self):
        return {
            **super().get_config(),
            "base_channels": self.base_channels,
            "channels_multiplier": self.channels_multiplier,
            "expansion_rate": self.expansion_rate,
            "blocks_per_stage": list(self.blocks_per_stage),
            "block_strides": self.block_strides,
            "use_grn": self.use_grn,
        }


@keras.saving.register_keras_serializable(package="keras_asc")
class CPMobileBackbone(_MobileBackbone):
    """CP-Mobile: a receptive-field-regularised MobileNet on log-mel spectrograms.

    Two strided 3x3 stem convolutions, stages of ``CPMobileBlock`` (plain 1x1 expansion), a
    1x1 convolution head and global average pooling. With its defaults this is the DCASE 2024
    Task 1 baseline network (61,148 parameters, 29.4 M MACs on 256 x 65 log-mels).

    Args:
        num_classes: number of scenes.
        spectrogram_shape: (mel bins, frames, 1) of the input log-mels.
        base_channels: width of the first stage.
        channels_multiplier: width growth per stage (``make_divisible`` to 8).
        expansion_rate: expansion width = ``make_divisible(in_channels * expansion_rate, 8)``.
        blocks_per_stage: blocks in each stage.
        block_strides: ``{block number (1-based): (freq, time) stride}``.
        use_grn: GRN after each block's residual add.

    Example:
        >>> backbone = CPMobileBackbone()  # the DCASE 2024 baseline network
        >>> logits = backbone(keras.ops.zeros((1, 256, 65, 1)))

    Reference:
        Schmid et al., "CP-Mobile", DCASE 2023; DCASE 2024 Task 1 baseline (CP-JKU).
    """

    def __init__(
        self,
        num_classes=10,
        spectrogram_shape=(256, 65, 1),
        base_channels=32,
        channels_multiplier=1.8,
        expansion_rate=2.1,
        blocks_per_stage=(3, 2, 1),
        block_strides=None,
        use_grn=False,
        name="cp_mobile",
        **kwargs,
    ):
        super().__init__(
            num_classes=num_classes,
            spectrogram_shape=spectrogram_shape,
            base_channels=base_channels,
            channels_multiplier=channels_multiplier,
            expansion_rate=expansion_rate,
            blocks_per_stage=blocks_per_stage,
            block_strides={"3": (1, 2), "4": (2, 1)} if block_strides is None else block_strides,
            use_grn=use_grn,
            pointwise_groups=None,
            name=name,
            **kwargs,
        )
