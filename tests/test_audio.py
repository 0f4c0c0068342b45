"""WAV decoding in graph ops, band-limited resampling, load_audio and decoding errors."""

import os
import struct

import numpy as np
import pytest
import scipy.io.wavfile
import scipy.signal
import tensorflow as tf

from keras_asc.data import audio
from keras_asc.data.audio import AudioDecodeError
from keras_asc.data.synthetic import write_wav

# Decoding is tf.data code: it does not depend on the Keras backend, so run it once.
pytestmark = pytest.mark.tensorflow_only


def _chunk(name, payload):
    pad = b"\x00" if len(payload) % 2 else b""
    return name + struct.pack("<I", len(payload)) + payload + pad


def _fmt(format_code, channels, rate, bits, extensible_code=None):
    block_align = channels * bits // 8
    body = struct.pack(
        "<HHIIHH", format_code, channels, rate, rate * block_align, block_align, bits
    )
    if extensible_code is not None:
        # cbSize 22, valid bits, channel mask, sub-format GUID (format code + fixed tail)
        guid = struct.pack("<H", extensible_code) + bytes.fromhex("000000001000800000aa00389b71")
        body += struct.pack("<HHI", 22, bits, 0x4 if channels == 1 else 0x3) + guid
    return _chunk(b"fmt ", body)


def _riff(*chunks):
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _int24_bytes(values):
    return np.asarray(values, "<i4").view(np.uint8).reshape(-1, 4)[:, :3].tobytes()


def _write(path, contents):
    with open(path, "wb") as handle:
        handle.write(contents)
    return str(path)


def _noise(num_samples, channels=1, seed=0, scale=0.5):
    rng = np.random.default_rng(seed)
    return (rng.uniform(-scale, scale, (num_samples, channels))).astype(np.float32)


def _snr_db(reference, estimate):
    return 10 * np.log10(np.sum(reference**2) / np.sum((estimate - reference) ** 2))


# --- formats ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "scale"),
    [
        (np.int16, 2**15),
        (np.int32, 2**31),
        (np.float32, None),
        (np.float64, None),
        (np.uint8, None),
    ],
)
def test_scipy_written_wavs_decode_exactly(tmp_path, dtype, scale):
    rng = np.random.default_rng(1)
    if dtype in (np.float32, np.float64):
        data = rng.uniform(-1, 1, (300, 2)).astype(dtype)
        expected = data.astype(np.float32)
    elif dtype is np.uint8:
        data = rng.integers(0, 256, (300, 2)).astype(np.uint8)
        expected = (data.astype(np.float32) - 128) / 128
    else:
        info = np.iinfo(dtype)
        data = rng.integers(info.min, info.max, (300, 2), endpoint=True).astype(dtype)
        expected = (data.astype(np.float64) / scale).astype(np.float32)
    path = str(tmp_path / "clip.wav")
    scipy.io.wavfile.write(path, 22050, data)
    samples, rate = audio.read_wav(path)
    assert rate == 22050
    assert samples.dtype == np.float32 and samples.shape == (300, 2)
    np.testing.assert_array_equal(samples, expected)


def test_24_bit_pcm_decodes_exactly_including_extremes(tmp_path):
    values = np.array([0, 1, -1, 2**23 - 1, -(2**23), 123456, -654321], np.int64)
    path = write_wav(tmp_path / "x24.wav", values, 44100, bits=24)
    samples, rate = audio.read_wav(path)
    assert rate == 44100
    np.testing.assert_array_equal(samples[:, 0], (values / 2**23).astype(np.float32))


@pytest.mark.parametrize(("code", "bits"), [(1, 24), (1, 16), (3, 32)])
def test_wave_format_extensible(tmp_path, code, bits):
    if code == 3:
        data = np.array([0.25, -0.5, 0.125, 0.75], np.float32)
        payload, expected = data.astype("<f4").tobytes(), data
    elif bits == 24:
        ints = np.array([5, -7, 2**22, -(2**23)])
        payload, expected = _int24_bytes(ints), (ints / 2**23).astype(np.float32)
    else:
        ints = np.array([5, -7, 2**14, -(2**15)])
        payload, expected = ints.astype("<i2").tobytes(), (ints / 2**15).astype(np.float32)
    contents = _riff(_fmt(0xFFFE, 1, 48000, bits, extensible_code=code), _chunk(b"data", payload))
    samples, rate = audio.read_wav(_write(tmp_path / "ext.wav", contents))
    assert rate == 48000
    np.testing.assert_array_equal(samples[:, 0], expected)


def test_chunks_in_any_order_and_odd_sizes(tmp_path):
    ints = np.array([100, -200, 300, -400, 500], np.int16)  # 10 bytes of data
    fmt = _fmt(1, 1, 16000, 16)
    data = _chunk(b"data", ints.astype("<i2").tobytes())
    listing = _chunk(b"LIST", b"INFOISFT\x05\x00\x00\x00abcd\x00")  # odd size: padded
    fact = _chunk(b"fact", struct.pack("<I", 5))
    expected = ints / np.float32(32768)
    for order in [(listing, fmt, fact, data), (data, listing, fmt), (fmt, data, listing)]:
        samples, rate = audio.read_wav(_write(tmp_path / "order.wav", _riff(*order)))
        assert rate == 16000
        np.testing.assert_array_equal(samples[:, 0], expected)


def test_stereo_downmix_is_the_channel_mean(tmp_path):
    data = _noise(32000, channels=2, seed=3)
    path = str(tmp_path / "stereo.wav")
    scipy.io.wavfile.write(path, 32000, data)
    mono = audio.load_audio(path)
    both = audio.load_audio(path, mono=False)
    assert mono.shape == (32000,) and both.shape == (32000, 2)
    np.testing.assert_allclose(mono, data.mean(axis=1), atol=1e-7)
    np.testing.assert_array_equal(both, data)


def test_real_24_bit_file(shared_data):
    path = shared_data / "audio" / "metro_station-paris.wav"
    samples, rate = audio.read_wav(path)
    assert rate == 44100 and samples.shape == (441000, 1)
    # Independent 24-bit parse of the data chunk (the file has the canonical 44-byte header).
    raw = np.frombuffer(path.read_bytes()[44:], np.uint8).reshape(-1, 3).astype(np.int32)
    ints = raw[:, 0] | raw[:, 1] << 8 | raw[:, 2] << 16
    ints = np.where(ints >= 2**23, ints - 2**24, ints)
    np.testing.assert_array_equal(samples[:, 0], (ints / 2**23).astype(np.float32))


def test_real_16_bit_stereo_file_matches_scipy(shared_data):
    path = shared_data / "audio" / "acoustic_scene.wav"
    rate_ref, reference = scipy.io.wavfile.read(path)
    samples, rate = audio.read_wav(path)
    assert rate == rate_ref == 44100 and samples.shape == reference.shape == (441001, 2)
    np.testing.assert_array_equal(samples, reference / np.float32(32768))


# --- resampling -------------------------------------------------------------------------------


def test_kaiser_filter_is_firwin():
    for num_taps, cutoff in [(8821, 1 / 441), (61, 1 / 3), (25601, 1 / 1280)]:
        reference = scipy.signal.firwin(num_taps, cutoff, window=("kaiser", 5.0))
        np.testing.assert_allclose(
            audio._kaiser_lowpass(num_taps, cutoff, 5.0), reference, atol=1e-15
        )


@pytest.mark.parametrize("orig_rate", [44100, 48000, 8000, 16000, 22050, 96000])
def test_resample_matches_resample_poly_on_a_synthetic_signal(orig_rate):
    # A chirp sweeping past the new Nyquist frequency plus noise: the filter's stop band
    # matters, and the output must equal scipy's (computed in float64) to float32 rounding.
    t = np.arange(orig_rate) / orig_rate
    signal = (
        0.4 * scipy.signal.chirp(t, 50, 1.0, orig_rate / 2.2)
        + _noise(orig_rate, seed=5, scale=0.1)[:, 0]
    )
    signal = signal.astype(np.float32)
    g = np.gcd(orig_rate, 32000)
    reference = scipy.signal.resample_poly(signal.astype(np.float64), 32000 // g, orig_rate // g)
    result = audio.resample(tf.constant(signal), orig_rate, 32000).numpy()
    assert result.shape == reference.shape == (32000,)
    max_error = np.abs(result - reference).max()
    # Measured: max |error| 1.2-1.6e-7 at every rate (peak 0.53), SNR 138-144 dB.
    assert max_error < 5e-7, max_error
    assert _snr_db(reference, result) > 130


def test_resample_matches_resample_poly_on_real_audio(shared_data):
    samples, rate = audio.read_wav(shared_data / "audio" / "metro_station-paris.wav")
    signal = samples[:, 0]
    reference = scipy.signal.resample_poly(signal.astype(np.float64), 320, 441)
    result = audio.resample(tf.constant(signal), rate, 32000).numpy()
    assert result.shape == reference.shape == (320000,)
    max_error = np.abs(result - reference).max()
    snr = _snr_db(reference, result)
    # Measured on this 10-s recording: max |error| 2.7e-7 (peak 0.91), SNR 140 dB; scipy's own
    # float32 resample_poly differs from its float64 result by 2.4e-7.
    assert max_error < 1e-6, max_error
    assert snr > 130, snr


def test_resample_in_a_batch_and_with_unknown_length():
    batch = _noise(4410, channels=3, seed=2).T  # (3, 4410)
    fixed = audio.resample(tf.constant(batch), 44100, 32000)
    assert fixed.shape == (3, 3200)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32)])
    def dynamic(x):
        return audio.resample(x, 44100, 32000)

    np.testing.assert_allclose(dynamic(batch).numpy(), fixed.numpy(), atol=1e-7)
    for row in range(3):
        np.testing.assert_allclose(
            fixed[row].numpy(),
            scipy.signal.resample_poly(batch[row].astype(np.float64), 320, 441),
            atol=5e-7,
        )
    assert audio.resample(tf.constant(batch), 32000, 32000).shape == (3, 4410)


def test_resample_rejects_bad_rates():
    with pytest.raises(ValueError, match="orig_rate=0"):
        audio.resample(tf.zeros([10]), 0, 32000)


# --- the graph decoder used by tf.data ---------------------------------------------------------


def test_decode_audio_static_shape_pad_and_trim(tmp_path):
    long_signal = _noise(3 * 44100, seed=4)[:, 0]
    short_signal = long_signal[:20000]
    long_path = write_wav(tmp_path / "long.wav", long_signal, 44100, bits=24)
    short_path = write_wav(tmp_path / "short.wav", short_signal, 44100, bits=24)
    dataset = tf.data.Dataset.from_tensor_slices([str(long_path), str(short_path)]).map(
        lambda path: audio.decode_audio(tf.io.read_file(path), path, num_samples=32000),
        num_parallel_calls=2,
    )
    assert dataset.element_spec.shape == (32000,)
    long_out, short_out = list(dataset.as_numpy_iterator())
    quantised = np.round(long_signal.astype(np.float64) * 2**23) / 2**23
    # A trimmed long file equals resampling the whole file and keeping the first second.
    reference = scipy.signal.resample_poly(quantised, 320, 441)[:32000]
    np.testing.assert_allclose(long_out, reference, atol=5e-7)
    # A short file is zero-padded before resampling: the filter's tail rings past its end.
    padded = np.pad(quantised[:20000], (0, 24100))
    expected_short = scipy.signal.resample_poly(padded, 320, 441)
    np.testing.assert_allclose(short_out, expected_short, atol=5e-7)
    assert np.all(short_out[14600:] == 0) and np.any(short_out[14513:14600])


def test_decode_audio_handles_each_pipeline_rate(tmp_path):
    paths = []
    for rate in (48000, 16000, 32000):
        paths.append(
            write_wav(tmp_path / f"r{rate}.wav", _noise(rate, seed=rate)[:, 0], rate, bits=16)
        )
    stereo = str(tmp_path / "stereo.wav")
    scipy.io.wavfile.write(stereo, 44100, _noise(44100, channels=2, seed=9))
    paths.append(stereo)

    @tf.function
    def decode(path):
        return audio.decode_audio(tf.io.read_file(path), path, num_samples=32000)

    for path in paths:
        expected = audio.load_audio(path)
        np.testing.assert_allclose(decode(tf.constant(str(path))).numpy(), expected, atol=1e-6)


def test_load_audio_resamples_any_rate(tmp_path):
    signal = _noise(12000, seed=6)[:, 0]
    path = write_wav(tmp_path / "odd.wav", signal, 12000, bits=32)
    result = audio.load_audio(path, sampling_rate=32000)
    reference = scipy.signal.resample_poly(
        np.round(signal.astype(np.float64) * 2**31) / 2**31, 8, 3
    )
    assert result.dtype == np.float32 and result.shape == (32000,)
    np.testing.assert_allclose(result, reference, atol=5e-7)


# --- errors -----------------------------------------------------------------------------------


def _good_wav():
    return _riff(_fmt(1, 1, 44100, 16), _chunk(b"data", np.zeros(100, "<i2").tobytes()))


BAD_FILES = {
    "empty": (b"", "the file is empty"),
    "short": (b"RIFF\x00\x00", "6 bytes is shorter than a RIFF/WAVE header"),
    "text": (b"this is not audio at all, just text", "not a RIFF/WAVE file"),
    "truncated": (_good_wav()[:120], "the data chunk declares 200 bytes but only 76 are present"),
    "no_data": (_riff(_fmt(1, 1, 44100, 16)), "no data chunk"),
    "no_fmt": (_riff(_chunk(b"data", b"\x00" * 8)), "no fmt chunk"),
    "adpcm": (
        _riff(_fmt(2, 1, 44100, 16), _chunk(b"data", b"\x00" * 8)),
        "unsupported WAV format code 2",
    ),
    "12bit": (
        _riff(_fmt(1, 1, 44100, 12), _chunk(b"data", b"\x00" * 8)),
        "unsupported sample size of 12 bits",
    ),
    "float16": (
        _riff(_fmt(3, 1, 44100, 16), _chunk(b"data", b"\x00" * 8)),
        "unsupported sample size of 16 bits for format code 3",
    ),
    "zero_channels": (
        _riff(_fmt(1, 0, 44100, 16), _chunk(b"data", b"\x00" * 8)),
        "invalid channel count 0",
    ),
    "no_samples": (_riff(_fmt(1, 1, 44100, 16), _chunk(b"data", b"")), "holds no samples"),
    "flac": (b"fLaC" + b"\x00" * 64, "FLAC"),
}


@pytest.fixture(scope="module")
def graph_try_decode():
    """try_decode_audio traced once (graph mode, as inside tf.data), shared by the error tests."""

    @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
    def decode(path):
        return audio.try_decode_audio(tf.io.read_file(path), path, num_samples=320)

    return decode


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_files_raise_an_error_naming_file_and_reason(tmp_path, name, graph_try_decode):
    contents, reason = BAD_FILES[name]
    path = _write(tmp_path / f"{name}.wav", contents)
    with pytest.raises(AudioDecodeError) as caught:
        audio.load_audio(path)
    assert caught.value.path == path
    assert reason in caught.value.reason
    assert str(caught.value) == f"Cannot decode audio file {path}: {caught.value.reason}"

    waveform, message = graph_try_decode(tf.constant(path))
    assert waveform.shape == (320,) and not np.any(waveform.numpy())
    message = message.numpy().decode()
    assert message.startswith(f"Cannot decode audio file {path}: ") and reason in message


def test_bad_file_inside_a_parallel_tf_data_map_names_the_file(tmp_path):
    good = write_wav(tmp_path / "good.wav", _noise(44100)[:, 0], 44100)
    bad = _write(tmp_path / "bad.wav", BAD_FILES["truncated"][0])
    dataset = tf.data.Dataset.from_tensor_slices([str(good), bad, str(good)]).map(
        lambda p: audio.decode_audio(tf.io.read_file(p), p, num_samples=32000),
        num_parallel_calls=2,
    )
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        list(dataset)
    assert (
        f"Cannot decode audio file {bad}: truncated: the data chunk declares 200 bytes but only "
        "76 are present" in caught.value.message
    )


def test_truncated_real_file_and_a_good_one(shared_data, tmp_path):
    contents = (shared_data / "audio" / "metro_station-paris.wav").read_bytes()
    path = _write(tmp_path / "cut.wav", contents[:5000])
    with pytest.raises(AudioDecodeError, match="declares 1323000 bytes but only 4956 are present"):
        audio.read_wav(path)
    good = _write(tmp_path / "good.wav", contents)
    _, error = audio.try_decode_audio(tf.io.read_file(good), good, num_samples=32000)
    assert error.numpy() == b""


def test_unsupported_rate_in_the_graph_decoder_names_the_rate(tmp_path):
    path = write_wav(tmp_path / "rate.wav", np.zeros(1000), 12345, bits=16)
    _, message = audio.try_decode_audio(tf.io.read_file(str(path)), str(path), num_samples=100)
    assert "sample rate 12345 Hz has no resampler" in message.numpy().decode()


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="no/such/file.wav"):
        audio.load_audio("no/such/file.wav")


def test_compressed_formats_without_tensorflow_io_say_how_to_install(tmp_path):
    try:
        import tensorflow_io  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("tensorflow-io is installed; this test covers its absence")
    for name, magic in [("x.flac", b"fLaC"), ("x.ogg", b"OggS"), ("x.mp3", b"ID3\x04")]:
        path = _write(tmp_path / name, magic + b"\x00" * 64)
        with pytest.raises(
            AudioDecodeError,
            match=r"install keras-asc\[tfio\] \(tensorflow-io 0\.37\.1, needs TensorFlow <= 2\.17\.1\)",
        ):
            audio.load_audio(path)


def test_decode_error_pickles():
    import pickle

    error = pickle.loads(pickle.dumps(AudioDecodeError("a.wav", "bad")))
    assert (error.path, error.reason) == ("a.wav", "bad")
    assert os.fspath("a.wav") in str(error)
