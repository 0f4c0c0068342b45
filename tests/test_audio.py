"""Audio decoding (libsndfile), resampling (resample_poly), load_audio and decoding errors."""

import io
import os
import pickle
import struct

import numpy as np
import pytest
import scipy.io.wavfile
import scipy.signal
import soundfile

from keras_asc.data import audio
from keras_asc.data.audio import AudioDecodeError
from keras_asc.data.synthetic import write_wav

# Decoding does not depend on the Keras backend, so it runs once.
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


def _pcm24_values(raw):
    """Signed integers of little-endian 24-bit PCM bytes, parsed with numpy alone."""
    triplets = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int64)
    values = triplets[:, 0] | triplets[:, 1] << 8 | triplets[:, 2] << 16
    return np.where(values >= 2**23, values - 2**24, values)


def _write(path, contents):
    with open(path, "wb") as handle:
        handle.write(contents)
    return str(path)


def _noise(num_samples, channels=1, seed=0, scale=0.5):
    rng = np.random.default_rng(seed)
    return rng.uniform(-scale, scale, (num_samples, channels))


def _encoded(data, rate, **kwargs):
    buffer = io.BytesIO()
    soundfile.write(buffer, data, rate, **kwargs)
    return buffer.getvalue()


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
    # scipy writes these files, so the writer is independent of the reader.
    rng = np.random.default_rng(1)
    if dtype in (np.float32, np.float64):
        data = rng.uniform(-1, 1, (300, 2)).astype(dtype)
        expected = data.astype(np.float64)
    elif dtype is np.uint8:
        data = rng.integers(0, 256, (300, 2)).astype(np.uint8)
        expected = (data.astype(np.float64) - 128) / 128
    else:
        info = np.iinfo(dtype)
        data = rng.integers(info.min, info.max, (300, 2), endpoint=True).astype(dtype)
        expected = data.astype(np.float64) / scale
    path = str(tmp_path / "clip.wav")
    scipy.io.wavfile.write(path, 22050, data)
    samples, rate = audio.read_audio(path, dtype="float64")
    assert rate == 22050 and samples.shape == (300, 2)
    np.testing.assert_array_equal(samples, expected)
    samples32, _ = audio.read_audio(path)
    assert samples32.dtype == np.float32
    np.testing.assert_array_equal(samples32, expected.astype(np.float32))


@pytest.mark.parametrize(
    ("container", "subtype", "bits"),
    [
        ("WAV", "PCM_U8", 8),
        ("WAV", "PCM_16", 16),
        ("WAV", "PCM_24", 24),
        ("WAV", "PCM_32", 32),
        ("WAVEX", "PCM_16", 16),
        ("WAVEX", "PCM_24", 24),
        ("RF64", "PCM_24", 24),
        ("W64", "PCM_24", 24),
        ("AIFF", "PCM_24", 24),
        ("FLAC", "PCM_16", 16),
        ("FLAC", "PCM_24", 24),
    ],
)
def test_lossless_formats_decode_exactly(tmp_path, container, subtype, bits):
    rng = np.random.default_rng(bits)
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    values = rng.integers(low, high, (1000, 2), endpoint=True)
    values[:4, 0] = [low, high, 0, -1]  # the extremes
    expected = values / 2.0 ** (bits - 1)
    path = _write(tmp_path / "clip", _encoded(expected, 48000, format=container, subtype=subtype))
    samples, rate = audio.read_audio(path, dtype="float64")
    assert rate == 48000
    np.testing.assert_array_equal(samples, expected)


@pytest.mark.parametrize("subtype", ["FLOAT", "DOUBLE"])
def test_float_wavs_and_extensible_float(tmp_path, subtype):
    data = _noise(500, channels=3, seed=2, scale=1.0)
    if subtype == "FLOAT":
        data = data.astype(np.float32).astype(np.float64)
    for container in ("WAV", "WAVEX"):
        path = _write(
            tmp_path / f"{container}.wav", _encoded(data, 16000, subtype=subtype, format=container)
        )
        samples, rate = audio.read_audio(path, dtype="float64")
        assert rate == 16000
        np.testing.assert_array_equal(samples, data)


@pytest.mark.parametrize(("code", "bits"), [(1, 24), (1, 16), (3, 32)])
def test_hand_built_wave_format_extensible(tmp_path, code, bits):
    if code == 3:
        data = np.array([0.25, -0.5, 0.125, 0.75], np.float32)
        payload, expected = data.astype("<f4").tobytes(), data.astype(np.float64)
    elif bits == 24:
        ints = np.array([5, -7, 2**22, -(2**23)])
        payload, expected = _int24_bytes(ints), ints / 2**23
    else:
        ints = np.array([5, -7, 2**14, -(2**15)])
        payload, expected = ints.astype("<i2").tobytes(), ints / 2**15
    contents = _riff(_fmt(0xFFFE, 1, 48000, bits, extensible_code=code), _chunk(b"data", payload))
    samples, rate = audio.read_audio(_write(tmp_path / "ext.wav", contents), dtype="float64")
    assert rate == 48000
    np.testing.assert_array_equal(samples[:, 0], expected)


def test_chunks_in_any_order_and_odd_sizes(tmp_path):
    ints = np.array([100, -200, 300, -400, 500], np.int16)  # 10 bytes of data
    fmt = _fmt(1, 1, 16000, 16)
    data = _chunk(b"data", ints.astype("<i2").tobytes())
    listing = _chunk(b"LIST", b"INFOISFT\x05\x00\x00\x00abcd\x00")  # odd size: padded
    fact = _chunk(b"fact", struct.pack("<I", 5))
    for order in [(listing, fmt, fact, data), (fmt, data, listing)]:
        samples, rate = audio.read_audio(_write(tmp_path / "order.wav", _riff(*order)), "float64")
        assert rate == 16000
        np.testing.assert_array_equal(samples[:, 0], ints / 32768)


def test_24_bit_writer_and_reader_agree_on_the_extremes(tmp_path):
    values = np.array([0, 1, -1, 2**23 - 1, -(2**23), 123456, -654321], np.int64)
    path = write_wav(tmp_path / "x24.wav", values, 44100, bits=24)
    raw = open(path, "rb").read()
    np.testing.assert_array_equal(_pcm24_values(raw[44 : 44 + 21]), values)  # the bytes
    samples, rate = audio.read_audio(path, dtype="float64")
    assert rate == 44100
    np.testing.assert_array_equal(samples[:, 0], values / 2**23)


def test_lossy_formats_decode(tmp_path):
    t = np.arange(48000) / 48000
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    for container, subtype in [("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III")]:
        if container not in soundfile.available_formats():
            continue  # older libsndfile builds have no MP3
        path = _write(
            tmp_path / container, _encoded(tone, 48000, format=container, subtype=subtype)
        )
        waveform = audio.load_audio(path, sampling_rate=48000)
        assert waveform.dtype == np.float32 and abs(len(waveform) - 48000) < 2000
        # Encoders delay and colour the signal: compare the level, not the samples.
        assert abs(np.sqrt(np.mean(waveform**2)) - 0.5 / np.sqrt(2)) < 0.05


def test_stereo_downmix_is_the_channel_mean(tmp_path):
    data = _noise(32000, channels=2, seed=3).astype(np.float32)
    path = str(tmp_path / "stereo.wav")
    scipy.io.wavfile.write(path, 32000, data)
    mono = audio.load_audio(path)
    both = audio.load_audio(path, mono=False)
    assert mono.shape == (32000,) and both.shape == (32000, 2)
    np.testing.assert_array_equal(mono, data.astype(np.float64).mean(axis=1).astype(np.float32))
    np.testing.assert_array_equal(both, data)


def test_stereo_downmix_before_resampling(tmp_path):
    data = _noise(4410, channels=2, seed=8)
    path = write_wav(tmp_path / "stereo44.wav", data, 44100, bits=24)
    stored = np.round(data * 2**23) / 2**23
    expected = scipy.signal.resample_poly(stored.mean(axis=1), 320, 441)
    np.testing.assert_allclose(audio.load_audio(path, resampler="polyphase"), expected, atol=1e-7)
    both = audio.load_audio(path, mono=False, resampler="polyphase")
    assert both.shape == (3200, 2)
    np.testing.assert_allclose(both, scipy.signal.resample_poly(stored, 320, 441), atol=1e-7)


# --- the real 24-bit recording --------------------------------------------------------------


def test_real_24_bit_file_equals_its_pcm_integers(shared_data):
    path = shared_data / "audio" / "metro_station-paris.wav"
    samples, rate = audio.read_audio(path, dtype="float64")
    assert rate == 44100 and samples.shape == (441000, 1)
    # An independent reading: the file has the canonical 44-byte header, then 24-bit PCM.
    values = _pcm24_values(path.read_bytes()[44:])
    reference = values / 2.0**23
    assert np.abs(samples[:, 0] - reference).max() <= 1e-6
    np.testing.assert_array_equal(samples[:, 0], reference)  # in fact exactly
    # The graph-op decoder this module replaced put each sample in the top of an int32 and
    # scaled by 2**-31 in float32: the new float32 samples are the same, bit for bit.
    old_decoder = ((values * 256).astype(np.int32).astype(np.float32)) * np.float32(2.0**-31)
    np.testing.assert_array_equal(audio.read_audio(path)[0][:, 0], old_decoder)


def test_real_24_bit_file_resampled_equals_float64_resample_poly(shared_data):
    path = shared_data / "audio" / "metro_station-paris.wav"
    reference = scipy.signal.resample_poly(_pcm24_values(path.read_bytes()[44:]) / 2**23, 320, 441)
    waveform = audio.load_audio(path, resampler="polyphase")
    assert waveform.shape == reference.shape == (320000,) and waveform.dtype == np.float32
    error = np.abs(waveform - reference).max()
    # float32 rounding of the float64 result: measured 3.0e-8 (peak 0.91). The graph-op
    # resampler this replaced was 2.7e-7 off.
    assert error <= 6e-8, error


def test_real_16_bit_stereo_file_matches_scipy(shared_data):
    path = shared_data / "audio" / "acoustic_scene.wav"
    rate_ref, reference = scipy.io.wavfile.read(path)
    samples, rate = audio.read_audio(path, dtype="float64")
    assert rate == rate_ref == 44100 and samples.shape == reference.shape == (441001, 2)
    np.testing.assert_array_equal(samples, reference / 32768)


# --- resampling -------------------------------------------------------------------------------


@pytest.mark.parametrize("orig_rate", [44100, 48000, 8000, 16000, 22050, 96000, 12345])
def test_resample_is_float64_resample_poly(orig_rate):
    # A chirp sweeping past the new Nyquist frequency plus noise: the filter's stop band
    # matters, and the result must be scipy's float64 result rounded to float32.
    t = np.arange(orig_rate) / orig_rate
    signal = (
        0.4 * scipy.signal.chirp(t, 50, 1.0, orig_rate / 2.2) + _noise(orig_rate, seed=5)[:, 0] / 5
    )
    g = np.gcd(orig_rate, 32000)
    reference = scipy.signal.resample_poly(signal, 32000 // g, orig_rate // g)
    result = audio.resample(signal, orig_rate, 32000, resampler="polyphase")
    assert result.dtype == np.float32
    assert result.shape == reference.shape == (audio.resampled_length(orig_rate, orig_rate, 32000),)
    np.testing.assert_array_equal(result, reference.astype(np.float32))
    assert np.abs(result - reference).max() <= 2.4e-7


def test_resample_float32_input_is_resampled_in_float64():
    signal = _noise(4410, seed=6)[:, 0].astype(np.float32)
    reference = scipy.signal.resample_poly(signal.astype(np.float64), 320, 441)
    np.testing.assert_array_equal(
        audio.resample(signal, 44100, 32000, resampler="polyphase"), reference.astype(np.float32)
    )


def test_resample_along_an_axis_and_equal_rates():
    batch = _noise(4410, channels=3, seed=2)  # (4410, 3)
    rows = audio.resample(batch.T, 44100, 32000, resampler="polyphase")
    columns = audio.resample(batch, 44100, 32000, axis=0, resampler="polyphase")
    assert rows.shape == (3, 3200) and columns.shape == (3200, 3)
    np.testing.assert_array_equal(rows, columns.T)
    same = audio.resample(batch, 32000, 32000, resampler="polyphase")
    assert same.dtype == np.float32 and np.array_equal(same, batch.astype(np.float32))


def test_resample_rejects_bad_rates():
    with pytest.raises(ValueError, match="orig_rate=0"):
        audio.resample(np.zeros(10), 0, 32000)
    with pytest.raises(ValueError, match="target_rate=-5"):
        audio.resample(np.zeros(10), 44100, -5)


# --- load_audio -------------------------------------------------------------------------------


@pytest.mark.parametrize("resampler", audio.RESAMPLERS)
def test_num_samples_reads_a_prefix_and_equals_trimming(shared_data, resampler):
    path = shared_data / "audio" / "metro_station-paris.wav"
    whole = audio.load_audio(path, resampler=resampler)
    for length in (1, 32000, 32001, 100000):
        np.testing.assert_array_equal(
            audio.load_audio(path, num_samples=length, resampler=resampler), whole[:length]
        )
    # only a prefix is read
    assert audio.input_frames_needed(32000, 44100, 32000, resampler) < 441000


def test_num_samples_pads_a_short_file_at_the_end(tmp_path):
    signal = _noise(20000, seed=4)[:, 0]
    path = write_wav(tmp_path / "short.wav", signal, 44100, bits=24)
    result = audio.load_audio(path, num_samples=32000, resampler="polyphase")
    expected = scipy.signal.resample_poly(np.round(signal * 2**23) / 2**23, 320, 441)
    assert result.shape == (32000,) and len(expected) == 14513
    np.testing.assert_allclose(result[:14513], expected, atol=1e-7)
    assert not np.any(result[14513:])


def test_load_audio_resamples_any_rate(tmp_path):
    signal = _noise(12000, seed=6)[:, 0]
    path = write_wav(tmp_path / "odd.wav", signal, 12000, bits=32)
    result = audio.load_audio(path, sampling_rate=32000, resampler="polyphase")
    reference = scipy.signal.resample_poly(np.round(signal * 2**31) / 2**31, 8, 3)
    assert result.dtype == np.float32 and result.shape == (32000,)
    np.testing.assert_allclose(result, reference, atol=1e-7)


def test_load_audio_rejects_bad_arguments(tmp_path):
    path = write_wav(tmp_path / "x.wav", np.zeros(100), 16000)
    with pytest.raises(ValueError, match="sampling_rate must be a positive integer"):
        audio.load_audio(path, sampling_rate=0)
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        audio.load_audio(path, num_samples=0)


# --- errors -----------------------------------------------------------------------------------


def _good_wav():
    return _riff(_fmt(1, 1, 44100, 16), _chunk(b"data", np.zeros(100, "<i2").tobytes()))


def _flac_bytes():
    return _encoded(_noise(44100, seed=7), 44100, format="FLAC", subtype="PCM_24")


def _cut(contents, fraction=0.6):
    return contents[: int(len(contents) * fraction)]


BAD_FILES = {
    "empty": (lambda: b"", "the file is empty (0 bytes); expected WAV, FLAC, OGG, MP3"),
    "short": (lambda: b"RIFF\x00\x00", "its first bytes are not the header of any audio format"),
    "text": (
        lambda: b"this is not audio at all, just text",
        "its first bytes are not the header of any audio format; expected WAV, FLAC",
    ),
    "truncated": (
        lambda: _good_wav()[:120],
        "truncated: the data chunk declares 200 bytes but only 76 are present",
    ),
    "header_only": (
        lambda: _good_wav()[:44],
        "truncated: the data chunk declares 200 bytes but only 0 are present",
    ),
    "no_data": (
        lambda: _riff(_fmt(1, 1, 44100, 16)),
        "its WAV header has no data chunk (no samples follow the header)",
    ),
    "cut_in_the_header": (
        lambda: _good_wav()[:22],
        "truncated: the RIFF header declares 244 bytes but the file has only 22",
    ),
    "no_samples": (
        lambda: _riff(_fmt(1, 1, 44100, 16), _chunk(b"data", b"")),
        "it holds no audio samples (0 frames)",
    ),
    "flac_magic_only": (lambda: b"fLaC" + b"\x00" * 64, "; expected WAV, FLAC, OGG, MP3"),
    "flac_truncated": (
        lambda: _cut(_flac_bytes()),
        "corrupt or truncated: decoding stopped part-way through its audio data",
    ),
    "rf64_truncated": (
        lambda: _cut(_encoded(_noise(5000, 2), 44100, format="RF64", subtype="PCM_24")),
        "truncated: the RF64 header declares",
    ),
    "aiff_truncated": (
        lambda: _cut(_encoded(_noise(5000, 2), 44100, format="AIFF", subtype="PCM_16")),
        "truncated: the SSND (sound data) chunk declares",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_files_raise_one_line_naming_file_and_reason(tmp_path, name):
    make, reason = BAD_FILES[name]
    path = _write(tmp_path / f"{name}.wav", make())
    with pytest.raises(AudioDecodeError) as caught:
        audio.load_audio(path)
    message = str(caught.value)
    assert caught.value.path == path
    assert reason in caught.value.reason, caught.value.reason
    assert message == f"Cannot decode audio file {path}: {caught.value.reason}"
    assert "\n" not in message


def test_truncated_real_file(shared_data, tmp_path):
    contents = (shared_data / "audio" / "metro_station-paris.wav").read_bytes()
    path = _write(tmp_path / "cut.wav", contents[:5000])
    with pytest.raises(
        AudioDecodeError, match="the data chunk declares 1323000 bytes but only 4956 are present"
    ):
        audio.read_audio(path)
    with pytest.raises(AudioDecodeError, match="cut.wav: truncated"):
        audio.load_audio(path, num_samples=100)  # also when only a prefix is wanted


def test_truncated_mp3_is_detected_by_its_short_read(tmp_path):
    if "MP3" not in soundfile.available_formats():
        pytest.skip("this libsndfile has no MP3 support")
    contents = _encoded(_noise(20000, 2), 44100, format="MP3", subtype="MPEG_LAYER_III")
    path = _write(tmp_path / "cut.mp3", _cut(contents, 0.5))
    with pytest.raises(AudioDecodeError, match=r"cut\.mp3: truncated: only \d+ of the \d+ frames"):
        audio.load_audio(path)


def test_a_streamed_wav_with_unknown_sizes_is_read_to_the_end(tmp_path):
    # A WAV written to a pipe leaves its RIFF and data sizes at 0xFFFFFFFF.
    contents = bytearray(_encoded(_noise(1000)[:, 0], 16000, format="WAV", subtype="PCM_16"))
    contents[4:8] = contents[40:44] = struct.pack("<I", 0xFFFFFFFF)
    samples, _ = audio.read_audio(_write(tmp_path / "streamed.wav", bytes(contents)))
    assert samples.shape == (1000, 1)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="no/such/file.wav"):
        audio.load_audio("no/such/file.wav")


def test_decode_error_pickles_and_is_one_line():
    error = pickle.loads(pickle.dumps(AudioDecodeError("a.wav", "bad\nthing")))
    assert (error.path, error.reason) == ("a.wav", "bad thing")
    assert str(error) == "Cannot decode audio file a.wav: bad thing"
    assert os.fspath("a.wav") in str(error)
