"""The CP-Mobile family; MofleNet (models/moflenet.py) shares its network builder."""

import keras

from keras_asc.layers.blocks import conv_bn, cp_mobile_block, make_divisible, mofle_block
from keras_asc.layers.frontend import DCASE24_BASELINE_FRONTEND
from keras_asc.models.base import (
    classifier_head,
    input_config,
    spectrogram_input,
    validate_common,
)


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


class _MobileNetwork(keras.Model):
    """Stem, stages of inverted-residual blocks and the head; shared by CPMobile and MofleNet."""

    _use_pointwise_groups = False

    def __init__(
        self,
        *,
        num_classes,
        base_channels,
        channels_multiplier,
        expansion_rate,
        blocks_per_stage,
        block_strides,
        use_grn,
        pointwise_groups,
        include_frontend,
        num_samples,
        frontend_config,
        spectrogram_augmentations,
        name,
        **kwargs,
    ):
        validate_common(num_classes, num_samples)
        if base_channels % 4:
            raise ValueError(f"base_channels must be divisible by 4. Received: base_channels={base_channels}")
        blocks_per_stage = tuple(int(n) for n in blocks_per_stage)
        num_blocks = sum(blocks_per_stage)
        strides = _parse_strides(block_strides, num_blocks)
        widths = _stage_widths(base_channels, channels_multiplier, len(blocks_per_stage))

        # === Functional model ===
        inputs, x, frontend, augmentation_layers = spectrogram_input(
            include_frontend=include_frontend,
            num_samples=num_samples,
            frontend_config=frontend_config,
            spectrogram_augmentations=spectrogram_augmentations,
            name=name,
        )
        x = conv_bn(x, base_channels // 4, 3, strides=2, padding=1, name=f"{name}_stem1")
        x = conv_bn(x, base_channels, 3, strides=2, padding=1, name=f"{name}_stem2")
        block_index = 0
        for stage, (num_stage_blocks, width) in enumerate(zip(blocks_per_stage, widths, strict=True), start=1):
            for _ in range(num_stage_blocks):
                block_index += 1
                expansion = make_divisible(x.shape[-1] * expansion_rate, 8)
                block_name = f"{name}_stage{stage}_block{block_index}"
                stride = strides.get(block_index, (1, 1))
                if self._use_pointwise_groups:
                    x = mofle_block(
                        x, width, expansion, strides=stride, pointwise_groups=pointwise_groups,
                        use_grn=use_grn, name=block_name,
                    )
                else:
                    x = cp_mobile_block(x, width, expansion, strides=stride, use_grn=use_grn, name=block_name)
        outputs = classifier_head(x, num_classes, name)
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)

        # === Config ===
        self.num_classes = num_classes
        self.base_channels = base_channels
        self.channels_multiplier = channels_multiplier
        self.expansion_rate = expansion_rate
        self.blocks_per_stage = blocks_per_stage
        self.block_strides = {str(k): list(v) for k, v in sorted(strides.items())}
        self.use_grn = use_grn
        self.pointwise_groups = pointwise_groups
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
            "expansion_rate": self.expansion_rate,
            "blocks_per_stage": list(self.blocks_per_stage),
            "block_strides": self.block_strides,
            "use_grn": self.use_grn,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_asc")
class CPMobile(_MobileNetwork):
    """CP-Mobile: a receptive-field-regularised MobileNet for acoustic scene classification.

    Two strided 3x3 stem convolutions, stages of CP-Mobile blocks (plain 1x1 expansion), a 1x1
    convolution head and global average pooling. With its defaults this is the DCASE 2024
    Task 1 baseline (61,148 parameters, 29.4 M MACs on 256 x 65 log-mels).

    Args:
        num_classes: number of scenes.
        base_channels: width of the first stage.
        channels_multiplier: width growth per stage (``make_divisible`` to 8).
        expansion_rate: expansion width = ``make_divisible(in_channels * expansion_rate, 8)``.
        blocks_per_stage: blocks in each stage.
        block_strides: ``{block number (1-based): (freq, time) stride}``.
        use_grn: GRN after each block's residual add.
        include_frontend: take waveforms and compute log-mels inside the model.
        num_samples: waveform length (32,000 for a 1-s clip at 32 kHz).
        frontend_config: ``LogMelSpectrogram`` arguments; by default the baseline's own
            front-end, ``keras_asc.layers.frontend.DCASE24_BASELINE_FRONTEND`` (periodic
            Hann window, HTK mel bank to 16 kHz, masking on the power mel, ``log(x + 1e-5)``
            without normalisation), so weights trained with the public baseline see the same
            input.
        spectrogram_augmentations: layers between front-end and network (training only).

    Example:
        >>> model = CPMobile()  # the DCASE 2024 baseline
        >>> logits = model(keras.ops.zeros((1, 32000)))

    Reference:
        Schmid et al., "CP-Mobile", DCASE 2023; DCASE 2024 Task 1 baseline (CP-JKU).
    """

    def __init__(
        self,
        num_classes=10,
        base_channels=32,
        channels_multiplier=1.8,
        expansion_rate=2.1,
        blocks_per_stage=(3, 2, 1),
        block_strides=None,
        use_grn=False,
        include_frontend=True,
        num_samples=32000,
        frontend_config=None,
        spectrogram_augmentations=None,
        name="cp_mobile",
        **kwargs,
    ):
        super().__init__(
            num_classes=num_classes,
            base_channels=base_channels,
            channels_multiplier=channels_multiplier,
            expansion_rate=expansion_rate,
            blocks_per_stage=blocks_per_stage,
            block_strides={"3": (1, 2), "4": (2, 1)} if block_strides is None else block_strides,
            use_grn=use_grn,
            pointwise_groups=1,
            include_frontend=include_frontend,
            num_samples=num_samples,
            frontend_config=dict(DCASE24_BASELINE_FRONTEND)
            if frontend_config is None
            else frontend_config,
            spectrogram_augmentations=spectrogram_augmentations,
            name=name,
            **kwargs,
        )
