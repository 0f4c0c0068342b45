"""Plain PyTorch versions of MofleNet57, CP-ResNet59 and the DCASE 2024 baseline (CP-Mobile).

What a DCASE Task 1 participant would otherwise run: ``nn.Module`` networks on NCHW
(batch, 1, freq, time) log-mels, written from the published architecture descriptions so that the Keras models
of ``keras_asc`` can be timed against a like-for-like PyTorch baseline
(``benchmarks/models_throughput.py``). Module paths mirror the Keras layer names
(``stage1_block1.expand.conv`` <-> ``<model>_stage1_block1_expand_conv``), which lets
``load_keras_weights`` copy a Keras model's weights in and ``check_against_keras`` prove that
both compute the same function.

Run ``python benchmarks/torch_reference.py [--waveform]`` to print parameter counts and the
largest logit difference against the Keras presets (any Keras backend; ``--waveform`` also
compares the ``LogMel`` front-end with ``keras_asc.layers.frontend.LogMelSpectrogram``).
"""

import argparse
import os
import sys

import numpy as np
import torch
from torch import nn

# PyTorch BatchNorm2d defaults (eps 1e-5, momentum 0.1) are the reference values; stated for clarity.
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.1


def make_divisible(value, divisor=8, min_value=None):
    """Round ``value`` to a multiple of ``divisor`` without going more than 10 % below it."""
    min_value = divisor if min_value is None else min_value
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


class ConvBN(nn.Module):
    """Bias-free convolution with symmetric zero padding, BatchNorm2d and optional ReLU."""

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        *,
        stride=1,
        padding=0,
        groups=1,
        activation=True,
    ):
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            groups=groups,
            bias=False,
        )
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPSILON, momentum=BN_MOMENTUM)
        self.activation = nn.ReLU() if activation else nn.Identity()

    def forward(self, x):
        return self.activation(self.bn(self.conv(x)))


class GRN(nn.Module):
    """Global response normalisation with scalar gamma and beta (CP-Mobile variant), NCHW."""

    def __init__(self, epsilon=1e-6):
        super().__init__()
        self.epsilon = epsilon
        self.gamma = nn.Parameter(torch.zeros(()))
        self.beta = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        # vector_norm's gradient is 0 where the norm is 0 (torch.sqrt's would be NaN).
        norms = torch.linalg.vector_norm(x, dim=(2, 3), keepdim=True)
        normalized = norms / (norms.mean(dim=1, keepdim=True) + self.epsilon)
        return self.gamma * (x * normalized) + self.beta + x


def channel_shuffle(x, groups):
    """ShuffleNet shuffle on NCHW: channels viewed as (groups, C // groups), axes swapped."""
    batch, channels, height, width = x.shape
    x = x.view(batch, groups, channels // groups, height, width).transpose(1, 2)
    return x.reshape(batch, channels, height, width)


class InvertedResidual(nn.Module):
    """Mofle block (pointwise_groups 2, shuffle, GRN) or CP-Mobile block (groups 1, no GRN).

    1x1 expansion (grouped) + BN + ReLU, shuffle, 3x3 depthwise (stride, padding 1) + BN +
    ReLU, 1x1 projection + BN, residual add when widths match (identity, or 3x3 AvgPool2d
    with count_include_pad when strided), optional GRN, ReLU.
    """

    def __init__(
        self, in_channels, out_channels, expansion_channels, *, stride, pointwise_groups, use_grn
    ):
        super().__init__()
        stride = _pair(stride)
        self.pointwise_groups = pointwise_groups
        self.expand = ConvBN(in_channels, expansion_channels, 1, groups=pointwise_groups)
        self.depthwise = ConvBN(
            expansion_channels,
            expansion_channels,
            3,
            stride=stride,
            padding=1,
            groups=expansion_channels,
        )
        self.project = ConvBN(expansion_channels, out_channels, 1, activation=False)
        if in_channels != out_channels:
            self.shortcut = None
        elif stride == (1, 1):
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=True)
        self.grn = GRN() if use_grn else nn.Identity()
        self.out_relu = nn.ReLU()

    def forward(self, x):
        y = self.expand(x)
        if self.pointwise_groups > 1:
            y = channel_shuffle(y, self.pointwise_groups)
        y = self.project(self.depthwise(y))
        if self.shortcut is not None:
            y = y + self.shortcut(x)
        return self.out_relu(self.grn(y))


class Head(nn.Module):
    """1x1 convolution to the classes (no bias), BN, global average pooling -> logits."""

    def __init__(self, in_channels, num_classes):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, num_classes, 1, bias=False)
        self.bn = nn.BatchNorm2d(num_classes, eps=BN_EPSILON, momentum=BN_MOMENTUM)

    def forward(self, x):
        return self.bn(self.conv(x)).mean(dim=(2, 3))


def frequency_mask(values, max_bins, generator):
    """Set one band of up to ``max_bins`` mel bins per clip of (batch, mel, frames) to 0.

    As torchaudio ``FrequencyMasking(max_bins, iid_masks=True)``: width ``floor(u * max_bins)``,
    start ``floor(u' * (num_mel_bins - u * max_bins))``.
    """
    batch, num_mel_bins = values.shape[0], values.shape[1]
    width = torch.rand(batch, generator=generator) * max_bins
    start = torch.floor(torch.rand(batch, generator=generator) * (num_mel_bins - width))
    rows = torch.arange(num_mel_bins)[None, :]
    masked = (rows >= start[:, None]) & (rows < (start + torch.floor(width))[:, None])
    return values.masked_fill(masked[:, :, None], 0.0)


def kaldi_mel(frequency):
    """Kaldi mel scale, 1127 ln(1 + f / 700)."""
    return 1127.0 * torch.log1p(frequency / 700.0)


class LogMel(nn.Module):
    """CP-JKU style log-mel front-end: (batch, samples) at 32 kHz -> (batch, 1, 256, frames).

    Pre-emphasis (optional), STFT (fft 4096, symmetric Hann window of 3072 centred in the frame,
    centre reflect padding), power, Kaldi mel bank (256 bands, fmin 0, fmax 15.5 kHz; the
    Nyquist bin weighted zero), log(mel + 1e-5), (x + 4.5) / 5. In training mode: fmax drawn
    uniformly in [15,001, 16,000] Hz per call and one band of up to 48 mel bins per clip set to
    0 before the normalisation.
    """

    def __init__(self, hop_length=500, pre_emphasis=0.97, seed=0):
        super().__init__()
        self.hop_length = hop_length
        self.pre_emphasis = pre_emphasis
        self.sampling_rate, self.fft_length, self.num_mel_bins = 32000, 4096, 256
        self.max_frequency, self.max_frequency_jitter = 15500.0, (15001.0, 16000.0)
        self.freq_mask_bins = 48
        self.register_buffer("window", torch.hann_window(3072, periodic=False), persistent=False)
        bin_hz = torch.arange(self.fft_length // 2, dtype=torch.float64)
        bin_hz = bin_hz * self.sampling_rate / self.fft_length
        self.register_buffer("bin_mel", kaldi_mel(bin_hz), persistent=False)
        self.register_buffer("bank", self.mel_bank(self.max_frequency), persistent=False)
        self.generator = torch.Generator().manual_seed(seed)

    def mel_bank(self, max_frequency):
        """(num_mel_bins, fft_length // 2 + 1) triangular filters equally spaced in Kaldi mel."""
        mel_high = kaldi_mel(torch.as_tensor(max_frequency, dtype=torch.float64))
        delta = mel_high / (self.num_mel_bins + 1)  # fmin 0 is mel 0
        left = torch.arange(self.num_mel_bins, dtype=torch.float64)[:, None] * delta
        up = (self.bin_mel[None, :] - left) / delta
        down = (left + 2 * delta - self.bin_mel[None, :]) / delta
        bank = torch.clamp(torch.minimum(up, down), min=0)
        return nn.functional.pad(bank, (0, 1)).float()

    def forward(self, x):
        if self.pre_emphasis:
            x = x[:, 1:] - self.pre_emphasis * x[:, :-1]
        spectrum = torch.stft(
            x,
            self.fft_length,
            hop_length=self.hop_length,
            win_length=3072,
            window=self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        power = spectrum.real.square() + spectrum.imag.square()  # (batch, bins, frames)
        bank = self.bank
        if self.training:
            low, high = self.max_frequency_jitter
            draw = torch.rand((), generator=self.generator).item()
            bank = self.mel_bank(low + (high - low) * draw)
        logmel = torch.log(torch.matmul(bank, power) + 1e-5)
        if self.training:
            logmel = frequency_mask(logmel, self.freq_mask_bins, self.generator)
        return ((logmel + 4.5) / 5.0).unsqueeze(1)


def htk_mel(frequency):
    """HTK mel scale, 2595 log10(1 + f / 700)."""
    return 2595.0 * torch.log10(1.0 + frequency / 700.0)


def htk_mel_bank(
    num_mel_bins=256, fft_length=4096, sampling_rate=32000, min_frequency=0.0, max_frequency=None
):
    """(num_mel_bins, fft_length // 2 + 1) bank as torchaudio ``melscale_fbanks(norm=None)``.

    Band edges equally spaced in HTK mel from ``min_frequency`` to ``max_frequency`` (default
    Nyquist), mapped back to Hz; each band a triangle linear in Hz over its two neighbouring
    edges, evaluated on every FFT bin from 0 Hz to Nyquist inclusive; no area normalisation.
    Built in float64, returned as float32.
    """
    if max_frequency is None:
        max_frequency = sampling_rate / 2
    bin_hz = torch.arange(fft_length // 2 + 1, dtype=torch.float64) * sampling_rate / fft_length
    mel_range = htk_mel(torch.tensor([min_frequency, max_frequency], dtype=torch.float64))
    mel = torch.linspace(
        float(mel_range[0]), float(mel_range[1]), num_mel_bins + 2, dtype=torch.float64
    )
    edges = 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    left, center, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bin_hz[None, :] - left) / (center - left)
    falling = (right - bin_hz[None, :]) / (right - center)
    return torch.clamp(torch.minimum(rising, falling), min=0).float()


class BaselineLogMel(nn.Module):
    """DCASE 2024 Task 1 baseline front-end: (batch, samples) at 32 kHz -> (batch, 1, 256, frames).

    What the public baseline computes with torchaudio ``MelSpectrogram(32000, n_fft=4096,
    win_length=3072, hop_length=500, n_mels=256)``: STFT with the periodic Hann window of 3072
    (``torch.hann_window`` default) centred in the 4096 frame, centre reflect padding, power,
    the HTK bank of ``htk_mel_bank`` (0 to 16 kHz), then ``log(mel + 1e-5)`` without
    normalisation. In training mode one band of up to ``freq_mask_bins`` mel bins per clip is
    set to 0 on the power mel before the log (``FrequencyMasking(48, iid_masks=True)``: width
    ``floor(u * 48)``, start ``floor(u' * (256 - u * 48))``), so it reads log(1e-5).
    """

    def __init__(self, hop_length=500, freq_mask_bins=48, seed=0):
        super().__init__()
        self.hop_length = hop_length
        self.fft_length, self.window_length, self.num_mel_bins = 4096, 3072, 256
        self.freq_mask_bins = freq_mask_bins
        self.register_buffer(
            "window", torch.hann_window(self.window_length, periodic=True), persistent=False
        )
        self.register_buffer(
            "bank", htk_mel_bank(self.num_mel_bins, self.fft_length), persistent=False
        )
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, x):
        spectrum = torch.stft(
            x,
            self.fft_length,
            hop_length=self.hop_length,
            win_length=self.window_length,
            window=self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        power = spectrum.real.square() + spectrum.imag.square()  # (batch, bins, frames)
        mel = torch.matmul(self.bank, power)  # (batch, mel bins, frames)
        if self.training and self.freq_mask_bins > 0:
            mel = frequency_mask(mel, self.freq_mask_bins, self.generator)
        return torch.log(mel + 1e-5).unsqueeze(1)


class WaveformModel(nn.Module):
    """Front-end followed by a network: the model a waveform-input run trains."""

    def __init__(self, frontend, network):
        super().__init__()
        self.frontend = frontend
        self.network = network

    def forward(self, x):
        with torch.no_grad():
            x = self.frontend(x)
        return self.network(x)


def _init_weights(module, mode="fan_out"):
    """He-normal convolutions (CP-Mobile: fan-out; CP-ResNet: fan-in), BN gamma 1, beta 0."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode=mode, nonlinearity="relu")
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)


def _init_fixup(module):
    """The CP-JKU CP-ResNet's Fixup-style rescaling after the fan-in He initialisation.

    In every basic block the first convolution is drawn with std
    ``L ** -0.5 * sqrt(2 / (k * k * out_channels))`` (L = number of blocks), the second is
    zeroed and a shortcut convolution gets std ``sqrt(2 / out_channels)``; the classifier
    convolution is zeroed.
    """
    blocks = [layer for layer in module.modules() if isinstance(layer, BasicBlock)]
    with torch.no_grad():
        for block in blocks:
            conv1 = block.conv1.conv
            fan = conv1.kernel_size[0] * conv1.kernel_size[1] * conv1.out_channels
            conv1.weight.normal_(0.0, len(blocks) ** -0.5 * (2.0 / fan) ** 0.5)
            block.conv2.conv.weight.zero_()
            if isinstance(block.shortcut, ConvBN):
                block.shortcut.conv.weight.normal_(0.0, (2.0 / block.shortcut.conv.out_channels) ** 0.5)
        module.head.conv.weight.zero_()


class MobileNetwork(nn.Module):
    """CP-Mobile / MofleNet: two strided 3x3 stem convs, stages of inverted residuals, head.

    Args:
        num_classes: number of scenes.
        base_channels: first stage width.
        channels_multiplier: width growth per stage (make_divisible to 8).
        expansion_rate: expansion = make_divisible(in_channels * expansion_rate, 8).
        blocks_per_stage: blocks in each stage.
        block_strides: {block number (1-based): (freq, time) stride}.
        pointwise_groups: groups of the 1x1 expansion (2 in MofleNet, shuffle follows).
        use_grn: GRN after each residual add.
    """

    def __init__(
        self,
        *,
        num_classes,
        base_channels,
        channels_multiplier,
        expansion_rate,
        blocks_per_stage,
        block_strides,
        pointwise_groups,
        use_grn,
    ):
        super().__init__()
        widths = [base_channels] + [
            make_divisible(base_channels * channels_multiplier**stage, 8)
            for stage in range(1, len(blocks_per_stage))
        ]
        self.stem1 = ConvBN(1, base_channels // 4, 3, stride=2, padding=1)
        self.stem2 = ConvBN(base_channels // 4, base_channels, 3, stride=2, padding=1)
        self.blocks = nn.ModuleDict()
        in_channels, index = base_channels, 0
        for stage, (num_blocks, width) in enumerate(
            zip(blocks_per_stage, widths, strict=True), start=1
        ):
            for _ in range(num_blocks):
                index += 1
                self.blocks[f"stage{stage}_block{index}"] = InvertedResidual(
                    in_channels,
                    width,
                    make_divisible(in_channels * expansion_rate, 8),
                    stride=block_strides.get(index, 1),
                    pointwise_groups=pointwise_groups,
                    use_grn=use_grn,
                )
                in_channels = width
        self.head = Head(in_channels, num_classes)
        _init_weights(self)

    def forward(self, x):
        x = self.stem2(self.stem1(x))
        for block in self.blocks.values():
            x = block(x)
        return self.head(x)


class BasicBlock(nn.Module):
    """CP-ResNet basic block: conv k1 (padding k1 // 3), BN, ReLU, conv k2, BN, shortcut, ReLU."""

    def __init__(self, in_channels, out_channels, kernel_sizes, *, groups=1):
        super().__init__()
        k1, k2 = kernel_sizes
        self.conv1 = ConvBN(in_channels, out_channels, k1, padding=k1 // 3, groups=groups)
        self.conv2 = ConvBN(
            out_channels, out_channels, k2, padding=k2 // 3, groups=groups, activation=False
        )
        self.shortcut = (
            nn.Identity()
            if in_channels == out_channels
            else ConvBN(in_channels, out_channels, 1, groups=groups, activation=False)
        )
        self.out_relu = nn.ReLU()

    def forward(self, x):
        return self.out_relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class CPResNet59(nn.Module):
    """CP-ResNet59 (rho 8, multiplier 1.4, widths [32, 44, 26], the report's two extra pools)."""

    def __init__(
        self, num_classes=10, base_channels=32, channels_multiplier=1.4, stage3_channel_cut=36
    ):
        super().__init__()
        widths = [
            base_channels,
            int(base_channels * channels_multiplier),
            int(base_channels * channels_multiplier**2) - stage3_channel_cut,
        ]
        self.stem = ConvBN(1, widths[0], 5, stride=2, padding=1)
        self.stem_pool = nn.MaxPool2d((2, 2))
        self.stage1_block1 = BasicBlock(widths[0], widths[0], (3, 1))
        self.stage1_block1_pool = nn.MaxPool2d((2, 1))
        self.stage1_block2 = BasicBlock(widths[0], widths[0], (3, 3))
        self.stage1_block2_pool = nn.MaxPool2d((2, 1))
        self.stage2_pool = nn.MaxPool2d((2, 1))
        self.stage2_block1 = BasicBlock(widths[0], widths[1], (3, 3), groups=2)
        self.stage3_pool = nn.MaxPool2d((1, 2))
        self.stage3_block1 = BasicBlock(widths[1], widths[2], (3, 1))
        self.head = Head(widths[2], num_classes)
        _init_weights(self, mode="fan_in")
        _init_fixup(self)

    def forward(self, x):
        x = self.stem_pool(self.stem(x))
        x = self.stage1_block1_pool(self.stage1_block1(x))
        x = self.stage1_block2_pool(self.stage1_block2(x))
        x = self.stage2_block1(self.stage2_pool(x))
        x = self.stage3_block1(self.stage3_pool(x))
        return self.head(x)


def moflenet57(num_classes=10):
    """MofleNet57: multiplier 1.8, expansion 2.6, blocks (3, 2, 1), input 256 x 64."""
    return MobileNetwork(
        num_classes=num_classes,
        base_channels=32,
        channels_multiplier=1.8,
        expansion_rate=2.6,
        blocks_per_stage=(3, 2, 1),
        block_strides={2: (2, 2), 3: (2, 1), 4: (2, 1)},
        pointwise_groups=2,
        use_grn=True,
    )


def cp_resnet59(num_classes=10):
    """CP-ResNet59, input 256 x 43."""
    return CPResNet59(num_classes=num_classes)


def dcase24_baseline(num_classes=10):
    """DCASE 2024 Task 1 baseline CP-Mobile: multiplier 1.8, expansion 2.1, no GRN, 256 x 65."""
    return MobileNetwork(
        num_classes=num_classes,
        base_channels=32,
        channels_multiplier=1.8,
        expansion_rate=2.1,
        blocks_per_stage=(3, 2, 1),
        block_strides={3: (1, 2), 4: (2, 1)},
        pointwise_groups=1,
        use_grn=False,
    )


# preset name -> (builder, (freq, time) of the log-mel input, expected trainable parameters,
# (front-end class, its arguments)); the baseline has its own torchaudio-style front-end.
REFERENCE_PRESETS = {
    "moflenet57": (
        moflenet57,
        (256, 64),
        60_440,
        (LogMel, {"hop_length": 500, "pre_emphasis": 0.97}),
    ),
    "cp_resnet59": (
        cp_resnet59,
        (256, 43),
        58_360,
        (LogMel, {"hop_length": 750, "pre_emphasis": 0.97}),
    ),
    "dcase24_baseline": (
        dcase24_baseline,
        (256, 65),
        61_148,
        (BaselineLogMel, {"hop_length": 500}),
    ),
}
NUM_SAMPLES = 32000


def build_reference(preset, waveform=False):
    """Return ``(module, input shape without the batch axis)`` for a keras-asc preset name.

    Args:
        preset: "moflenet57", "cp_resnet59" or "dcase24_baseline".
        waveform: put the preset's front-end first (``BaselineLogMel`` for
            "dcase24_baseline", ``LogMel`` otherwise); the input is then (batch, 32000).

    Example:
        >>> model, shape = build_reference("moflenet57")  # shape (1, 256, 64)
        >>> model(torch.zeros(2, *shape)).shape
        torch.Size([2, 10])
    """
    if preset not in REFERENCE_PRESETS:
        raise ValueError(
            f"No PyTorch reference for preset {preset!r}. Accepted: {sorted(REFERENCE_PRESETS)}"
        )
    builder, (freq, frames), _, (frontend_class, frontend_args) = REFERENCE_PRESETS[preset]
    if waveform:
        return WaveformModel(frontend_class(**frontend_args), builder()), (NUM_SAMPLES,)
    return builder(), (1, freq, frames)


def count_parameters(module):
    """Trainable parameters (BN gamma/beta counted, running statistics are buffers)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def load_keras_weights(module, keras_model):
    """Copy a channels-last Keras model's weights into ``module`` by layer name.

    Conv2D kernels (kh, kw, in/groups, out) -> (out, in/groups, kh, kw); DepthwiseConv2D
    kernels (kh, kw, in, 1) -> (in, 1, kh, kw); BN gamma, beta and moving statistics; GRN
    scalars. Every Keras layer with trainable weights must find its target and vice versa,
    else ValueError.
    """
    from keras_asc.layers import leaf_layers

    prefix = keras_model.name + "_"
    keras_layers = {
        layer.name.removeprefix(prefix): layer
        for layer in leaf_layers(keras_model)
        if layer.trainable_weights
    }
    used = set()
    for path, sub in module.named_modules():
        if not isinstance(sub, (nn.Conv2d, nn.BatchNorm2d, GRN)):
            continue
        name = path.removeprefix("network.").replace("blocks.", "").replace(".", "_")
        if name not in keras_layers:
            raise ValueError(
                f"Torch module {path!r} has no Keras layer {prefix + name!r} in {keras_model.name}."
            )
        weights = [np.asarray(w) for w in keras_layers[name].get_weights()]
        used.add(name)
        with torch.no_grad():
            if isinstance(sub, nn.Conv2d):
                (kernel,) = weights
                depthwise = sub.groups == sub.in_channels and sub.groups > 1
                _copy(
                    sub.weight, kernel.transpose((2, 3, 0, 1) if depthwise else (3, 2, 0, 1)), path
                )
            elif isinstance(sub, nn.BatchNorm2d):
                gamma, beta, mean, variance = weights
                _copy(sub.weight, gamma, path)
                _copy(sub.bias, beta, path)
                _copy(sub.running_mean, mean, path)
                _copy(sub.running_var, variance, path)
            else:
                gamma, beta = weights
                _copy(sub.gamma, gamma, path)
                _copy(sub.beta, beta, path)
    missing = sorted(set(keras_layers) - used)
    if missing:
        raise ValueError(
            f"Keras layers without a torch counterpart in {keras_model.name}: {missing}"
        )


def _copy(target, value, path):
    if tuple(target.shape) != tuple(value.shape):
        raise ValueError(f"{path}: shape {tuple(target.shape)} != Keras shape {tuple(value.shape)}")
    target.copy_(torch.from_numpy(np.array(value, dtype=np.float32)))


def check_against_keras(preset, waveform=False, batch_size=2, seed=0):
    """Compare the reference with the Keras preset on the same weights.

    Builds both, perturbs the Keras BN statistics and GRN scalars so they matter, copies the
    weights over and runs both in inference mode on random log-mels (or, with ``waveform``,
    on noisy 1 kHz tones through both front-ends).

    Returns:
        (Keras trainable parameters, torch parameters, max |logit difference|, max |logit|).
    """
    import keras

    import keras_asc
    from keras_asc.layers import leaf_layers

    keras.utils.set_random_seed(seed)
    keras_model = keras_asc.build(preset)
    if not waveform:
        keras_model = keras_model.backbone
    rng = np.random.default_rng(seed)
    for layer in leaf_layers(keras_model):
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights(
                [
                    gamma * rng.uniform(0.5, 1.5, gamma.shape),
                    rng.normal(0, 0.1, beta.shape),
                    rng.normal(0, 0.1, mean.shape),
                    rng.uniform(0.5, 2.0, variance.shape),
                ]
            )
        elif type(layer).__name__ == "GlobalResponseNormalization":
            layer.set_weights([np.float32(rng.normal(0, 0.5)), np.float32(rng.normal(0, 0.1))])
    module, shape = build_reference(preset, waveform=waveform)
    load_keras_weights(module, keras_model)
    module.eval()
    if waveform:
        # A realistic level, so the log-mels are not dominated by log(1e-5).
        tone = 0.1 * np.sin(2 * np.pi * 1000 * np.arange(NUM_SAMPLES) / 32000.0)
        x = (tone + rng.normal(0, 0.05, (batch_size, NUM_SAMPLES))).astype("float32")
        torch_x = torch.from_numpy(x)
    else:
        x = rng.normal(0, 1, (batch_size, *shape[1:], 1)).astype("float32")
        torch_x = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    keras_logits = np.asarray(keras.ops.convert_to_numpy(keras_model(x, training=False)))
    with torch.no_grad():
        torch_logits = module(torch_x).numpy()
    keras_params = sum(int(np.prod(w.shape)) for w in keras_model.trainable_weights)
    difference = float(np.max(np.abs(keras_logits - torch_logits)))
    return keras_params, count_parameters(module), difference, float(np.max(np.abs(keras_logits)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=",".join(REFERENCE_PRESETS))
    parser.add_argument("--no-keras", action="store_true", help="only count the torch parameters")
    parser.add_argument(
        "--waveform", action="store_true", help="also compare with the front-ends included"
    )
    args = parser.parse_args(argv)
    failed = False
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    for preset in args.presets.split(","):
        if preset not in REFERENCE_PRESETS:
            parser.error(f"--presets: {preset!r} is not one of {', '.join(REFERENCE_PRESETS)}")
        expected = REFERENCE_PRESETS[preset][2]
        if args.no_keras:
            params = count_parameters(build_reference(preset)[0])
            print(f"{preset:18s} torch params {params:,} (expected {expected:,})")
            failed |= params != expected
            continue
        for waveform in (False, True) if args.waveform else (False,):
            keras_params, torch_params, diff, scale = check_against_keras(preset, waveform)
            # float32 through ~20 layers (and a 4096-point FFT for waveforms): 1e-3 relative.
            ok = keras_params == torch_params == expected and diff <= 1e-3 * max(scale, 1.0)
            failed |= not ok
            print(
                f"{preset:18s} {'waveform   ' if waveform else 'spectrogram'} "
                f"keras params {keras_params:,}  torch params {torch_params:,} (expected {expected:,})  "
                f"max |logit diff| {diff:.2e} (max |logit| {scale:.2f}) [{backend}]  "
                f"{'OK' if ok else 'MISMATCH'}"
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
