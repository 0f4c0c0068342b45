"""MofleNet (MobileShuffleNet): CP-Mobile with Mofle blocks."""

import keras

from keras_asc.models.cp_mobile import _MobileNetwork


@keras.saving.register_keras_serializable(package="keras_asc")
class MofleNet(_MobileNetwork):
    """MofleNet (MobileShuffleNet): CP-Mobile with grouped pointwise expansion, shuffle and GRN.

    Defaults give MofleNet57 (report Table 2): channel multiplier 1.8, expansion rate 2.6,
    blocks (3, 2, 1) with strides (2, 2), (2, 1), (2, 1) at blocks 2-4, on 256 x 64 log-mels
    (hop 500 with pre-emphasis).

    Args:
        num_classes: number of scenes.
        base_channels: width of the first stage.
        channels_multiplier: width growth per stage (``make_divisible`` to 8).
        expansion_rate: expansion width = ``make_divisible(in_channels * expansion_rate, 8)``.
        blocks_per_stage: blocks in each stage.
        block_strides: ``{block number (1-based): (freq, time) stride}``.
        use_grn: GRN after each block's residual add.
        pointwise_groups: groups of the 1x1 expansion (followed by a channel shuffle).
        include_frontend: take waveforms and compute log-mels inside the model.
        num_samples: waveform length (32,000 for a 1-s clip at 32 kHz).
        frontend_config: ``LogMelSpectrogram`` arguments.
        spectrogram_augmentations: layers between front-end and network (training only).

    Example:
        >>> model = MofleNet()
        >>> logits = model(keras.ops.zeros((1, 32000)))

    Reference:
        "Low complexity acoustic scene classification with MofleNet", DCASE 2024 Task 1 report.
    """

    _use_pointwise_groups = True

    def __init__(
        self,
        num_classes=10,
        base_channels=32,
        channels_multiplier=1.8,
        expansion_rate=2.6,
        blocks_per_stage=(3, 2, 1),
        block_strides=None,
        use_grn=True,
        pointwise_groups=2,
        include_frontend=True,
        num_samples=32000,
        frontend_config=None,
        spectrogram_augmentations=None,
        name="moflenet",
        **kwargs,
    ):
        super().__init__(
            num_classes=num_classes,
            base_channels=base_channels,
            channels_multiplier=channels_multiplier,
            expansion_rate=expansion_rate,
            blocks_per_stage=blocks_per_stage,
            block_strides={"2": (2, 2), "3": (2, 1), "4": (2, 1)} if block_strides is None else block_strides,
            use_grn=use_grn,
            pointwise_groups=pointwise_groups,
            include_frontend=include_frontend,
            num_samples=num_samples,
            frontend_config={"hop_length": 500} if frontend_config is None else frontend_config,
            spectrogram_augmentations=spectrogram_augmentations,
            name=name,
            **kwargs,
        )

    def get_config(self):
        return {**super().get_config(), "pointwise_groups": self.pointwise_groups}
