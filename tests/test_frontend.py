"""LogMelSpectrogram against an independent NumPy/SciPy implementation of the same recipe."""

import json

import keras
import numpy as np
import pytest
import scipy.io.wavfile
import scipy.optimize
import scipy.signal

from keras_asc.layers import frontend
from keras_asc.layers.frontend import LogMelSpectrogram

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


def reference_power(x, hop_length=500, pre_emphasis=0.97, fft_length=4096, window_length=3072):
    """(batch, frames, fft bins) power spectrogram in float64, frames built by hand."""
    x = np.asarray(x, dtype=np.float64)
    if pre_emphasis:
        x = x[:, 1:] - pre_emphasis * x[:, :-1]
    half = fft_length // 2
    x = np.pad(x, [(0, 0), (half, half)], mode="reflect")
    window = np.zeros(fft_length)
    offset = (fft_length - window_length) // 2
    window[offset : offset + window_length] = scipy.signal.windows.hann(window_length, sym=True)
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
