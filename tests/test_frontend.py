"""LogMelSpectrogram against an independent NumPy/SciPy implementation of the same recipe."""

import importlib.util
import json
import pathlib

import keras
import numpy as np
import pytest
import scipy.io.wavfile
import scipy.optimize
import scipy.signal

from keras_asc.layers import frontend
from keras_asc.layers.frontend import DCASE24_BASELINE_FRONTEND, LogMelSpectrogram

SAMPLING_RATE = 32000
# Max abs error of the float32 layer vs the float64 reference on the normalised log-mel.
# Broadband signals (noise, real audio) measure <= 3.2e-5 on all three backends, while a
# periodic instead of symmetric Hann window already moves values by 1.3e-3, fmax off by 1 Hz
# by 3e-3, and constant instead of reflect padding by 0.4.
TOLERANCE = 1e-4
# A loud pure tone leaves far-away bands at the float32 FFT noise floor (~1e-7 of the peak),
# close to the 1e-5 log offset: measured up to 4.8e-4 there, so tones get a looser bound.
TONE_TOLERANCE = 1e-3


# --- independent reference (NumPy / SciPy only, no keras ops) -------------------------------


def reference_mel_bank(fmax, fmin=0.0, num_bands=256, fft_length=4096, rate=SAMPLING_RATE):
    """Kaldi get_mel_banks (VTLN off) plus a zero Nyquist row, shape (fft bins, bands)."""

    def mel(f):
        return 1127.0 * np.log(1.0 + np.asarray(f, dtype=np.float64) / 700.0)

    bins_mel = mel(np.arange(fft_length // 2) * rate / fft_length)[:, None]
    step = (mel(fmax) - mel(fmin)) / (num_bands + 1)
    left = mel(fmin) + np.arange(num_bands) * step
    center, right = left + step, left + 2 * step
    rising = (bins_mel - left) / (center - left)
    falling = (right - bins_mel) / (right - center)
    bank = np.clip(np.minimum(rising, falling), 0.0, None)
    return np.concatenate([bank, np.zeros((1, num_bands))])


def reference_power(
    x, hop_length=500, pre_emphasis=0.97, fft_length=4096, window_length=3072, periodic=False
):
    """(batch, frames, fft bins) power spectrogram in float64, frames built by hand."""
    x = np.asarray(x, dtype=np.float64)
    if pre_emphasis:
        x = x[:, 1:] - pre_emphasis * x[:, :-1]
    half = fft_length // 2
    x = np.pad(x, [(0, 0), (half, half)], mode="reflect")
    window = np.zeros(fft_length)
    offset = (fft_length - window_length) // 2
    hann = scipy.signal.windows.hann(window_length, sym=not periodic)
    window[offset : offset + window_length] = hann
    num_frames = 1 + (x.shape[1] - fft_length) // hop_length
    starts = np.arange(num_frames) * hop_length
    frames = x[:, starts[:, None] + np.arange(fft_length)[None, :]]
    return np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2


def reference_logmel_from_power(power, fmax=15500.0):
    # einsum without BLAS: multithreaded BLAS crawls for these small products on a busy machine
    mel = np.einsum("btk,km->btm", power, reference_mel_bank(fmax))
    logmel = (np.log(mel + 1e-5) + 4.5) / 5.0
    return logmel.transpose(0, 2, 1)[..., None]


def reference_logmel(x, hop_length=500, pre_emphasis=0.97, fmax=15500.0):
    return reference_logmel_from_power(reference_power(x, hop_length, pre_emphasis), fmax)


def reference_htk_bank(fmax=16000.0, fmin=0.0, num_bands=256, fft_length=4096, rate=SAMPLING_RATE):
    """torchaudio's melscale_fbanks(norm=None, mel_scale="htk"), shape (fft bins, bands).

    num_bands + 2 points equally spaced on 2595 log10(1 + f / 700), taken back to Hz; band b
    rises linearly in Hz from point b to point b + 1 and falls to point b + 2; the grid runs
    from 0 Hz to Nyquist inclusive.
    """
    to_mel = lambda f: 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)  # noqa: E731
    to_hz = lambda m: 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)  # noqa: E731
    points = to_hz(np.linspace(to_mel(fmin), to_mel(fmax), num_bands + 2))
    grid = np.linspace(0.0, rate / 2, fft_length // 2 + 1)
    bank = np.zeros((grid.size, num_bands))
    for band in range(num_bands):
        low, peak, high = points[band : band + 3]
        up = (grid - low) / (peak - low)
        down = (high - grid) / (high - peak)
        bank[:, band] = np.clip(np.minimum(up, down), 0.0, None)
    return bank


def reference_baseline_logmel(x):
    """The DCASE 2024 baseline front-end: periodic Hann, HTK bank to 16 kHz, log(x + 1e-5)."""
    power = reference_power(x, hop_length=500, pre_emphasis=None, periodic=True)
    mel = np.einsum("btk,km->btm", power, reference_htk_bank())
    return np.log(mel + 1e-5).transpose(0, 2, 1)[..., None]


def as_numpy(tensor):
    return keras.ops.convert_to_numpy(tensor)


def noise(batch, num_samples, seed=0):
    return (0.1 * np.random.default_rng(seed).standard_normal((batch, num_samples))).astype(
        "float32"
    )


# --- shapes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "hop_length, pre_emphasis, frames",
    [(500, 0.97, 64), (750, 0.97, 43), (500, None, 65)],
    ids=["moflenet-hop500", "cp_resnet-hop750", "dcase24-baseline"],
)
def test_output_shape_one_second(hop_length, pre_emphasis, frames):
    layer = LogMelSpectrogram(hop_length=hop_length, pre_emphasis=pre_emphasis)
    x = noise(2, SAMPLING_RATE)
    y = as_numpy(layer(x))
    assert y.shape == (2, 256, frames, 1)
    assert layer.num_frames(SAMPLING_RATE) == frames
    assert layer.compute_output_shape((None, SAMPLING_RATE)) == (None, 256, frames, 1)
    np.testing.assert_allclose(y, reference_logmel(x, hop_length, pre_emphasis), atol=TOLERANCE)


def test_num_frames_other_lengths():
    layer = LogMelSpectrogram()
    for num_samples in (4097, 10000):
        y = as_numpy(layer(noise(1, num_samples)))
        assert y.shape[2] == layer.num_frames(num_samples) == 1 + (num_samples - 1) // 500
        assert layer.compute_output_shape((1, num_samples)) == y.shape


# --- numbers vs the reference ----------------------------------------------------------------


def test_mel_filter_bank_matches_kaldi():
    layer = LogMelSpectrogram()
    bank = layer.mel_filter_bank()
    assert bank.shape == (2049, 256) and bank.dtype == np.float32
    np.testing.assert_allclose(bank, reference_mel_bank(15500.0), atol=1e-6)
    assert not bank[-1].any()  # Nyquist row
    np.testing.assert_allclose(
        layer.mel_filter_bank(16000.0), reference_mel_bank(16000.0), atol=1e-6
    )
    # 15,500 Hz sits at FFT bin 1984: above it the bank is all zero.
    assert bank[:1984].any(axis=1)[1:].all() and not bank[1984:].any()


def test_jittered_bank_matches_kaldi():
    """The keras.ops bank used in training equals the NumPy bank for the same fmax."""
    layer = LogMelSpectrogram(max_frequency_jitter=(15200.0, 15200.0), seed=0)
    np.testing.assert_allclose(
        as_numpy(layer._jittered_filter_bank()), reference_mel_bank(15200.0), atol=1e-4
    )


@pytest.mark.parametrize("frequency", [1000.0, 5000.0])
def test_tone_matches_reference_and_peaks_at_kaldi_band(frequency):
    t = np.arange(SAMPLING_RATE) / SAMPLING_RATE
    x = np.stack(
        [0.5 * np.sin(2 * np.pi * frequency * t), 0.05 * np.cos(2 * np.pi * frequency * t)]
    )
    x = x.astype("float32")
    y = as_numpy(LogMelSpectrogram()(x))
    expected = reference_logmel(x)
    error = np.abs(y - expected).max()
    assert error < TONE_TOLERANCE, f"max abs error {error:.2e} at {frequency} Hz"

    mel = 1127.0 * np.log1p(frequency / 700.0)
    step = 1127.0 * np.log1p(15500.0 / 700.0) / 257
    centers = (np.arange(256) + 1) * step
    band = int(np.argmin(np.abs(centers - mel)))  # 1 kHz: 71.58 -> 72; 5 kHz: 170.55 -> 171
    assert band == {1000.0: 72, 5000.0: 171}[frequency]
    peaks = y[..., 0].mean(axis=2).argmax(axis=1)
    np.testing.assert_array_equal(peaks, [band, band])


def load_real_clips(shared_data):
    rate, audio = scipy.io.wavfile.read(shared_data / "audio" / "metro_station-paris.wav")
    assert rate == 44100 and audio.dtype == np.int32 and audio.ndim == 1
    audio = audio / 2.0**31  # scipy left-aligns 24-bit samples in int32
    audio = scipy.signal.resample_poly(audio, 320, 441)
    return np.stack([audio[32000:64000], audio[160000:192000]]).astype("float32")


def test_real_audio_matches_reference(shared_data):
    x = load_real_clips(shared_data)
    for hop_length in (500, 750):
        y = as_numpy(LogMelSpectrogram(hop_length=hop_length)(x))
        error = np.abs(y - reference_logmel(x, hop_length)).max()
        assert error < TOLERANCE, f"hop {hop_length}: max abs error {error:.2e}"
    y = as_numpy(LogMelSpectrogram(pre_emphasis=None)(x))
    assert y.shape == (2, 256, 65, 1)
    np.testing.assert_allclose(y, reference_logmel(x, pre_emphasis=None), atol=TOLERANCE)


# --- training-time augmentation ---------------------------------------------------------------


def test_inference_is_deterministic():
    layer = LogMelSpectrogram(seed=1)
    x = noise(2, 8000)
    first = as_numpy(layer(x, training=False))
    np.testing.assert_array_equal(first, as_numpy(layer(x, training=False)))
    np.testing.assert_array_equal(first, as_numpy(layer(x)))
    np.testing.assert_allclose(first, reference_logmel(x), atol=TOLERANCE)


def masked_rows(train, infer):
    """Per example, the mel rows that training changed; they must all be log 0 -> 0.9."""
    bands = []
    for train_example, infer_example in zip(train[..., 0], infer[..., 0], strict=True):
        changed = np.flatnonzero(np.any(train_example != infer_example, axis=1))
        np.testing.assert_allclose(train_example[changed], 0.9, atol=1e-6)
        bands.append(changed)
    return bands


def test_frequency_masking_per_example():
    layer = LogMelSpectrogram(max_frequency_jitter=None, seed=3)
    x = noise(4, 8000)
    infer = as_numpy(layer(x))
    train = as_numpy(layer(x, training=True))
    bands = masked_rows(train, infer)
    for rows in bands:
        assert len(rows) <= 48
        if len(rows):  # one contiguous band
            np.testing.assert_array_equal(rows, np.arange(rows[0], rows[0] + len(rows)))
    assert len({tuple(rows) for rows in bands}) > 1, "all examples got the same mask"
    assert sum(len(rows) for rows in bands) > 0
    # a second call draws new masks
    again = masked_rows(as_numpy(layer(x, training=True)), infer)
    assert [tuple(r) for r in again] != [tuple(r) for r in bands]


def test_frequency_masking_statistics():
    """Width floor(u * 48) has mean 23.5; start u' * (256 - u * 48) has mean 116."""
    layer = LogMelSpectrogram(max_frequency_jitter=None, seed=11)
    x = noise(256, 4097, seed=5)  # 9 frames per clip keeps this cheap
    bands = masked_rows(as_numpy(layer(x, training=True)), as_numpy(layer(x)))
    widths = np.array([len(rows) for rows in bands])
    starts = np.array([rows[0] for rows in bands if len(rows)])
    assert widths.max() <= 47 and abs(widths.mean() - 23.5) < 3.0, widths.mean()
    assert abs(starts.mean() - 116.0) < 15.0, starts.mean()
    assert max(rows[-1] for rows in bands if len(rows)) <= 255


def fit_max_frequency(power, target):
    """The fmax whose reference log-mel best matches target, and the max abs error there.

    The mean error is smooth and has a single minimum in fmax (every band edge moves with
    it), so a bounded scalar search finds it in a few dozen evaluations.
    """

    def error(fmax, reduce=np.mean):
        return reduce(np.abs(reference_logmel_from_power(power, fmax) - target))

    result = scipy.optimize.minimize_scalar(
        error, bounds=(14900.0, 16000.0), method="bounded", options={"xatol": 0.01}
    )
    return result.x, error(result.x, np.max)


def test_max_frequency_jitter_draws_one_fmax_per_batch():
    layer = LogMelSpectrogram(freq_mask_bins=0, seed=5)
    x = noise(2, 8000)
    power = reference_power(x)
    infer = as_numpy(layer(x))
    fitted = []
    for _ in range(2):
        train = as_numpy(layer(x, training=True))
        assert np.abs(train - infer).max() > 1e-2
        # a single fmax explains both examples of the batch to reference precision
        fmax, error = fit_max_frequency(power, train)
        assert error < TOLERANCE, f"no single fmax reproduces the batch (error {error:.2e})"
        assert 15001.0 - 1.0 <= fmax <= 16000.0
        fitted.append(fmax)
    assert abs(fitted[0] - fitted[1]) > 1.0, f"same fmax drawn twice: {fitted}"


def test_same_seed_same_training_output():
    x = noise(2, 8000)
    first = as_numpy(LogMelSpectrogram(seed=42)(x, training=True))
    second = as_numpy(LogMelSpectrogram(seed=42)(x, training=True))
    np.testing.assert_array_equal(first, second)


# --- Keras integration -------------------------------------------------------------------------


def test_config_round_trip():
    layer = LogMelSpectrogram(
        hop_length=750, num_mel_bins=128, max_frequency=15000.0, freq_mask_bins=20, seed=9
    )
    config = layer.get_config()
    restored = LogMelSpectrogram.from_config(json.loads(json.dumps(config)))
    assert restored.get_config() == config
    assert config["max_frequency_jitter"] == (15001.0, 16000.0) and config["seed"] == 9
    x = noise(2, 8000)
    np.testing.assert_array_equal(as_numpy(layer(x)), as_numpy(restored(x)))
    np.testing.assert_array_equal(
        as_numpy(layer(x, training=True)), as_numpy(restored(x, training=True))
    )
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(revived, LogMelSpectrogram) and revived.get_config() == config


def test_functional_model_fit_predict_save(tmp_path):
    num_samples = 8000
    inputs = keras.Input((num_samples,))
    frontend_layer = LogMelSpectrogram(seed=0, name="frontend")
    features = frontend_layer(inputs)
    assert tuple(features.shape) == (None, 256, frontend_layer.num_frames(num_samples), 1)
    h = keras.layers.Conv2D(4, 3, strides=4)(features)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inputs, keras.layers.Dense(3)(h))
    assert frontend_layer.weights == [] and frontend_layer.count_params() == 0

    x, labels = noise(4, num_samples), np.array([0, 1, 2, 1])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, labels, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])

    predicted = model.predict(x, batch_size=2, verbose=0)
    np.testing.assert_array_equal(predicted, model.predict(x, batch_size=2, verbose=0))
    # predict runs the inference front-end
    extractor = keras.Model(inputs, features)
    np.testing.assert_allclose(extractor.predict(x, verbose=0), reference_logmel(x), atol=TOLERANCE)

    path = tmp_path / "frontend_model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.get_layer("frontend"), LogMelSpectrogram)
    assert loaded.get_layer("frontend").get_config() == frontend_layer.get_config()
    np.testing.assert_allclose(loaded.predict(x, batch_size=2, verbose=0), predicted, atol=1e-6)


# --- argument checking -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"window_length": 5000}, "window_length"),
        ({"hop_length": 0}, "hop_length"),
        ({"max_frequency": 17000.0}, "max_frequency"),
        ({"max_frequency_jitter": (15001.0, 17000.0)}, "max_frequency_jitter"),
        ({"max_frequency_jitter": (16000.0,)}, "max_frequency_jitter"),
        ({"freq_mask_bins": 300}, "freq_mask_bins"),
        ({"pre_emphasis": 1.5}, "pre_emphasis"),
        ({"log_offset": 0.0}, "log_offset"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LogMelSpectrogram(**kwargs)


def test_too_short_clip_is_rejected():
    with pytest.raises(ValueError, match="longer than fft_length // 2"):
        LogMelSpectrogram()(np.zeros((1, 2048), "float32"))
    with pytest.raises(ValueError, match="batch, num_samples"):
        LogMelSpectrogram().compute_output_shape((1, 2, 32000))


def test_module_exports():
    import keras_asc.layers

    assert keras_asc.layers.LogMelSpectrogram is frontend.LogMelSpectrogram


# --- DCASE 2024 Task 1 baseline front-end ----------------------------------------------------

# Max abs error of the float32 layer vs the float64 reference on the un-normalised baseline
# log-mel (5 x the CP-JKU numbers, which are divided by 5): the mean is the bound asked for,
# the max (reached in quiet high bands, close to the 1e-5 log offset) gets a looser one.
BASELINE_MEAN_TOLERANCE = 1e-4
BASELINE_MAX_TOLERANCE = 1e-3
LOG_FLOOR = float(np.log(np.float32(1e-5)))  # a masked band: log(0 + 1e-5)


def baseline_layer(**overrides):
    return LogMelSpectrogram(**{**DCASE24_BASELINE_FRONTEND, **overrides})


def scene_like(batch=2, seed=0):
    """1-s clips at a realistic level: brown-ish noise about -30 dBFS RMS plus three tones."""
    rng = np.random.default_rng(seed)
    t = np.arange(SAMPLING_RATE) / SAMPLING_RATE
    white = rng.standard_normal((batch, SAMPLING_RATE + 1000))
    brown = scipy.signal.lfilter([1.0], [1.0, -0.98], white, axis=1)[:, 1000:]
    brown *= 0.03 / brown.std(axis=1, keepdims=True)
    tones = sum(
        amplitude * np.sin(2 * np.pi * frequency * t + phase)
        for amplitude, frequency, phase in (
            (0.05, 440.0, 0.3),
            (0.01, 3150.0, 1.1),
            (0.002, 12500.0, 2.0),
        )
    )
    return (brown + tones + 1e-3 * rng.standard_normal((batch, SAMPLING_RATE))).astype("float32")


def assert_baseline_matches_reference(x, label):
    y = as_numpy(baseline_layer()(x))
    assert y.shape == (x.shape[0], 256, 65, 1)
    error = np.abs(y - reference_baseline_logmel(x))
    print(f"{label}: mean abs error {error.mean():.2e}, max {error.max():.2e}")
    assert error.mean() <= BASELINE_MEAN_TOLERANCE, f"{label}: mean abs error {error.mean():.2e}"
    assert error.max() <= BASELINE_MAX_TOLERANCE, f"{label}: max abs error {error.max():.2e}"
    return error


def test_baseline_matches_reference_synthetic():
    error = assert_baseline_matches_reference(scene_like(), "synthetic scene")
    assert error.mean() < 1e-5


def test_baseline_matches_reference_real_audio(shared_data):
    assert_baseline_matches_reference(load_real_clips(shared_data), "metro_station-paris.wav")


def test_baseline_differs_from_cpjku_settings():
    """Each baseline setting matters: switching any one back moves the output far more than the
    layer's error against the reference (symmetric window: mean 4.9e-4, max 2e-3)."""
    x = scene_like(batch=1)
    baseline = as_numpy(baseline_layer()(x))
    for override in (
        {"window": "hann_symmetric"},
        {"mel_scale": "kaldi"},
        {"max_frequency": 15500.0},
    ):
        difference = np.abs(as_numpy(baseline_layer(**override)(x)) - baseline)
        assert difference.mean() > 3 * BASELINE_MEAN_TOLERANCE, (override, difference.mean())
        assert difference.max() > BASELINE_MAX_TOLERANCE, (override, difference.max())


def test_htk_bank_matches_torchaudio_definition():
    bank = baseline_layer().mel_filter_bank()
    assert bank.shape == (2049, 256) and bank.dtype == np.float32
    np.testing.assert_allclose(bank, reference_htk_bank(), atol=1e-6)
    # Hand-checked points. Centres: 700 (10^(k m / 2595) - 1) Hz, m = 2595 log10(1 + 16000 / 700)
    # / 257: band 0 peaks at 8.693 Hz (bin 1, 7.8125 Hz, reads 7.8125 / 8.693 = 0.8987; bin 2,
    # 15.625 Hz, on the falling edge to 17.495 Hz: 0.2125), band 100 at 1734.99 Hz (bin 222,
    # 1734.375 Hz: 0.9795), band 255 at 15795.14 Hz (bin 2022, 15796.875 Hz: 0.9915).
    np.testing.assert_allclose(bank[1, 0], 0.89866, atol=1e-4)
    np.testing.assert_allclose(bank[2, 0], 0.21245, atol=1e-4)
    np.testing.assert_allclose(bank[222, 100], 0.97950, atol=1e-4)
    np.testing.assert_allclose(bank[2022, 255], 0.99155, atol=1e-4)
    for band, peak_bin in ((0, 1), (100, 222), (255, 2022)):
        assert bank[:, band].argmax() == peak_bin
    # Linear in Hz: on band 255's falling edge the weights drop by the same step per bin.
    steps = np.diff(bank[2023:2048, 255].astype(np.float64))
    np.testing.assert_allclose(steps, steps.mean(), atol=1e-5)
    # The Nyquist row is evaluated like every other (not zeroed as in the Kaldi bank), but
    # the top band ends at 16 kHz = Nyquist exactly, so it reads 0 there; one bin below, the
    # falling edge still weights bin 2047 (15,992 Hz) with 0.0381.
    np.testing.assert_allclose(bank[2047, 255], 0.03814, atol=1e-4)
    assert np.abs(bank[2048]).max() < 1e-6
    # Below 16 kHz the top band ends earlier and the rows above it are zero.
    lower = baseline_layer(max_frequency=15000.0).mel_filter_bank()
    np.testing.assert_allclose(lower, reference_htk_bank(fmax=15000.0), atol=1e-6)
    assert not lower[1921:].any() and lower[1919].any()


def test_htk_jittered_bank_matches_reference():
    layer = baseline_layer(max_frequency_jitter=(15200.0, 15200.0), seed=0)
    np.testing.assert_allclose(
        as_numpy(layer._jittered_filter_bank()), reference_htk_bank(fmax=15200.0), atol=1e-4
    )


def test_baseline_power_domain_masking():
    layer = baseline_layer(seed=4)
    x = scene_like(batch=8, seed=1)
    infer = as_numpy(layer(x))
    np.testing.assert_array_equal(infer, as_numpy(layer(x, training=False)))  # deterministic
    np.testing.assert_array_equal(infer, as_numpy(layer(x)))
    train = as_numpy(layer(x, training=True))
    bands = []
    for train_example, infer_example in zip(train[..., 0], infer[..., 0], strict=True):
        changed = np.flatnonzero(np.any(train_example != infer_example, axis=1))
        # masked on the power mel: log(0 + 1e-5), every frame of the band
        np.testing.assert_allclose(train_example[changed], LOG_FLOOR, atol=1e-6)
        assert len(changed) <= 47  # floor(u * 48), u < 1
        if len(changed):
            np.testing.assert_array_equal(changed, np.arange(changed[0], changed[0] + len(changed)))
        bands.append(tuple(changed))
    assert len(set(bands)) > 1, "all examples got the same mask (the baseline masks per example)"
    assert sum(map(len, bands)) > 0
    # No other training-time change: without masking, training equals inference.
    unmasked = baseline_layer(freq_mask_bins=0, seed=4)
    np.testing.assert_allclose(as_numpy(unmasked(x, training=True)), infer, atol=1e-6)


def test_baseline_masking_statistics():
    layer = baseline_layer(seed=12)
    x = noise(256, 4097, seed=6)
    train, infer = as_numpy(layer(x, training=True)), as_numpy(layer(x))
    widths = np.array(
        [np.any(t != i, axis=1).sum() for t, i in zip(train[..., 0], infer[..., 0], strict=True)]
    )
    assert widths.max() <= 47 and abs(widths.mean() - 23.5) < 3.0, widths.mean()


def test_baseline_config_and_preset(tmp_path):
    import keras_asc

    model = keras_asc.build("dcase24_baseline")
    config = model.frontend.get_config()
    for key, value in DCASE24_BASELINE_FRONTEND.items():
        assert config[key] == value, key
    assert config["freq_mask_bins"] == 48 and config["log_offset"] == 1e-5
    assert tuple(model.frontend.output.shape) == (None, 256, 65, 1)
    # the network sees 256 x 65 log-mels
    network = keras_asc.build("dcase24_baseline").backbone
    assert tuple(network.input.shape) == (None, 256, 65, 1)

    layer_config = json.loads(json.dumps(config))
    restored = LogMelSpectrogram.from_config(layer_config)
    assert restored.get_config() == config
    model_config = json.loads(json.dumps(model.get_config()))
    for key, value in DCASE24_BASELINE_FRONTEND.items():
        assert model_config["frontend"]["config"][key] == (list(value) if isinstance(value, tuple) else value), key
    rebuilt = type(model).from_config(model_config)
    assert rebuilt.frontend.get_config() == config

    x = scene_like(batch=2)
    path = tmp_path / "dcase24_baseline.keras"
    model.save(path)
    loaded = keras_asc.load_model(str(path))
    assert loaded.frontend.get_config() == config
    np.testing.assert_allclose(
        as_numpy(loaded(x, training=False)), as_numpy(model(x, training=False)), atol=1e-5
    )


def test_frontend_numpy_matches_baseline_layer(tmp_path):
    from keras_asc.quantization.frontend import (
        frontend_numpy,
        frontend_params,
        load_frontend_params,
        save_frontend_params,
    )

    layer = baseline_layer()
    x = scene_like(batch=2)
    x[1] *= 1e-2  # quiet clip: the log offset matters
    expected = as_numpy(layer(x))
    params = frontend_params(layer)
    assert params["window_function"] == "hann_periodic" and params["mel_scale"] == "htk"
    assert params["pre_emphasis"] is None
    assert (params["normalize_offset"], params["normalize_scale"]) == (0.0, 1.0)
    window = np.zeros(4096)
    window[512:3584] = scipy.signal.windows.hann(3072, sym=False)
    np.testing.assert_allclose(params["window"], window, atol=1e-7)
    np.testing.assert_allclose(params["mel_filter_bank"], reference_htk_bank(), atol=1e-6)
    error = np.abs(frontend_numpy(x, params) - expected).max()
    assert error <= 1e-4, f"max abs error {error:.2e}"
    save_frontend_params(str(tmp_path / "f.npz"), [params])
    (loaded,) = load_frontend_params(str(tmp_path / "f.npz"))
    assert loaded["window_function"] == "hann_periodic" and loaded["mel_scale"] == "htk"
    np.testing.assert_allclose(frontend_numpy(x, loaded), expected, atol=1e-4)
    # a config dict gives the same constants as the layer
    from_config = frontend_params(layer.get_config())
    np.testing.assert_array_equal(from_config["window"], params["window"])
    np.testing.assert_array_equal(from_config["mel_filter_bank"], params["mel_filter_bank"])


def test_blocked_bank_equals_dense_bank():
    """call() applies the bank block-wise; the blocks hold every non-zero weight."""
    for layer in (LogMelSpectrogram(), baseline_layer(), LogMelSpectrogram(num_mel_bins=64)):
        blocks = layer._bank_blocks
        upper_edges = [layer.max_frequency, *(layer.max_frequency_jitter or ())]
        for fmax in np.linspace(min(upper_edges), max(upper_edges), 7):
            bank = layer.mel_filter_bank(fmax)
            covered = np.zeros(bank.shape, bool)
            for (first, end), (band_first, band_end) in blocks:
                covered[first:end, band_first:band_end] = True
            assert not bank[~covered].any(), f"weights outside the blocks at fmax {fmax}"
        assert sum((r[1] - r[0]) * (b[1] - b[0]) for r, b in blocks) < 0.2 * bank.size
    x = noise(2, 8000)
    dense = reference_logmel_from_power(reference_power(x))
    np.testing.assert_allclose(as_numpy(LogMelSpectrogram()(x)), dense, atol=TOLERANCE)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"window": "hamming"}, "window"),
        ({"mel_scale": "slaney"}, "mel_scale"),
        ({"mask_domain": "linear"}, "mask_domain"),
    ],
)
def test_invalid_baseline_arguments(kwargs, message):
    with pytest.raises(ValueError, match=f"Received: {message}="):
        LogMelSpectrogram(**kwargs)


def test_torch_reference_baseline_frontend_matches_layer():
    torch = pytest.importorskip("torch")
    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "torch_reference.py"
    spec = importlib.util.spec_from_file_location("keras_asc_torch_reference_frontend", path)
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)

    module, shape = reference.build_reference("dcase24_baseline", waveform=True)
    assert shape == (32000,) and isinstance(module.frontend, reference.BaselineLogMel)
    frontend_module = module.frontend.eval()
    np.testing.assert_allclose(
        frontend_module.bank.numpy().T, baseline_layer().mel_filter_bank(), atol=1e-6
    )
    x = scene_like(batch=2)
    with torch.no_grad():
        torch_logmel = frontend_module(torch.from_numpy(x)).numpy()  # (batch, 1, 256, 65)
    keras_logmel = as_numpy(baseline_layer()(x))
    error = np.abs(torch_logmel.transpose(0, 2, 3, 1) - keras_logmel)
    # Two float32 FFT implementations: in most runs max 6e-6, but in some runs of this file
    # (not in isolation) the difference is 1.4e-3 at most, mean 3e-5, in mid-level bands too;
    # which side varies is not yet known, so the bound covers both observed modes.
    print(f"torch BaselineLogMel vs keras: mean {error.mean():.2e}, max {error.max():.2e}")
    assert error.mean() <= 1e-4, f"mean abs error {error.mean():.2e}"
    assert error.max() <= 5e-3, f"max abs error {error.max():.2e}"
    # training mode: the same masking rule on the power mel (values log 1e-5, <= 47 bands)
    frontend_module.train()
    with torch.no_grad():
        masked = frontend_module(torch.from_numpy(x)).numpy()[:, 0]
    for train_example, infer_example in zip(masked, torch_logmel[:, 0], strict=True):
        changed = np.any(train_example != infer_example, axis=1)
        np.testing.assert_allclose(train_example[changed], LOG_FLOOR, atol=1e-6)
        assert changed.sum() <= 47
