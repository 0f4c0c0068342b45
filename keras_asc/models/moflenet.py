"""The MofleNet (MobileShuffleNet) backbone: CP-Mobile with Mofle blocks."""

import keras

from keras_asc.models.cp_mobile import _MobileBackbone


@keras.saving.register_keras_serializable(package="keras_asc")
class MofleNetBackbone(_MobileBackbone):
    """MofleNet (MobileShuffleNet): CP-Mobile with ``MofleBlock`` (grouped pointwise expansion,
    channel shuffle and GRN), on log-mel spectrograms.

    Defaults give MofleNet57 (report Table 2): channel multiplier 1.8, expansion rate 2.6,
    blocks (3, 2, 1) with strides (2, 2), (2, 1), (2, 1) at blocks 2-4, on 256 x 64 log-mels
    (hop 500).

    Args:
        num_classes: number of scenes.
        spectrogram_shape: (mel bins, frames, 1) of the input log-mels.
        base_channels: width of the first stage.
        channels_multiplier: width growth per stage (``make_divisible`` to 8).
        expansion_rate: expansion width = ``make_divisible(in_channels * expansion_rate, 8)``.
        blocks_per_stage: blocks in each stage.
        block_strides: ``{block number (1-based): (freq, time) stride}``.
        use_grn: GRN after each block's residual add.
        pointwise_groups: groups of the 1x1 expansion (followed by a channel shuffle).

    Example:
        >>> backbone = MofleNetBackbone()  # MofleNet57
        >>> logits = backbone(keras.ops.zeros((1, 256, 64, 1)))

    Reference:
        "Low complexity acoustic scene classification with MofleNet", DCASE 2024 Task 1 report.
    """

    def __init__(
        self,
        num_classes=10,
        spectrogram_shape=(256, 64, 1),
        base_channels=32,
        channels_multiplier=1.8,
        expansion_rate=2.6,
        blocks_per_stage=(3, 2, 1),
        block_strides=None,
        use_grn=True,
        pointwise_groups=2,
        name="moflenet",
        **kwargs,
    ):
        super().__init__(
            num_classes=num_classes,
            spectrogram_shape=spectrogram_shape,
            base_channels=base_channels,
            channels_multiplier=channels_multiplier,
            expansion_rate=expansion_rate,
            blocks_per_stage=blocks_per_stage,
            block_strides={"2": (2, 2), "3": (2, 1), "4": (2, 1)} if block_strides is None else block_strides,
            use_grn=use_grn,
            pointwise_groups=pointwise_groups,
            name=name,
            **kwargs,
        )
        self.pointwise_groups = pointwise_groups

    def get_config(self):
        return {**super().get_config(), "pointwise_groups": self.pointwise_groups}
