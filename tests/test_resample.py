"""The three named resamplers: sinc_hann against torchaudio's outputs and a direct sum of its
formula, soxr_hq against librosa.load, and the audio-file faults found at decoding."""

import math

import numpy as np
import pytest
import scipy.signal

from keras_asc.data import audio, resampling
from keras_asc.data.audio import AudioDecodeError
from keras_asc.data.synthetic import write_wav


def _chirp_noise(rate, seconds=0.25, seed=0):
    t = np.arange(int(rate * seconds)) / rate
    noise = np.random.default_rng(seed).standard_normal(len(t))
    return 0.4 * scipy.signal.chirp(t, 30, seconds, rate / 2.1) + 0.1 * noise


def _direct_sinc_hann(x, orig_rate, new_rate, width=6, rolloff=0.99):
    """torchaudio's published definition, one output at a time (slow; for tests only).

    Output m = n * new + j is the sum over inputs i of
    x[i] * (f / orig) * sinc(t) * cos(pi t / (2 width))**2, t = f ((i - n orig) / orig - j / new),
    |t| <= width, rates divided by their gcd, f = rolloff * min(orig, new), with j / new in
    float32 as torchaudio computes it.
    """
    g = math.gcd(orig_rate, new_rate)
    orig, new = orig_rate // g, new_rate // g
    f = rolloff * min(orig, new)
    length = math.ceil(len(x) * new / orig)
    out = np.zeros(length)
    inputs = np.arange(len(x))
    for m in range(length):
        n, j = divmod(m, new)
        phase = float(np.float32(j) / np.float32(new))
        t = f * ((inputs - n * orig) / orig - phase)
        inside = np.abs(t) <= width
        weights = (f / orig) * np.sinc(t[inside]) * np.cos(np.pi * t[inside] / (2 * width)) ** 2
        out[m] = np.dot(x[inside], weights)
    return out


# --- sinc_hann: torchaudio's default Resample ---------------------------------------------------


@pytest.mark.parametrize(
    "name", ["acoustic_scene", "metro_station-paris", "chirp_noise_44k", "chirp_noise_48k"]
)
def test_sinc_hann_matches_torchaudio_outputs(shared_data, name):
    reference = np.load(shared_data / "resample_reference" / f"{name}.npz")
    result = resampling.resample(
        reference["input"],
        int(reference["input_rate"]),
        int(reference["output_rate"]),
        method="sinc_hann",
    )
    assert result.shape == reference["output"].shape and result.dtype == np.float32
    error = np.abs(result - reference["output"]).max()
    assert error <= 1e-6, error  # measured 0.9e-7 to 1.2e-7: float32 rounding
    # The polyphase filter keras-asc used before is measurably off (3e-3 at 44.1 kHz).
    before = resampling.resample(
        reference["input"], int(reference["input_rate"]), 32000, method="polyphase"
    )
    assert np.abs(before - reference["output"]).max() > 1e-4


@pytest.mark.parametrize("orig_rate", [44100, 48000, 22050, 16000, 8000])
def test_sinc_hann_equals_a_direct_sum_of_its_formula(orig_rate):
    signal = _chirp_noise(orig_rate, seconds=0.02, seed=orig_rate)
    result = resampling.resample(signal, orig_rate, 32000, method="sinc_hann")
    expected = _direct_sinc_hann(signal, orig_rate, 32000)
    assert result.shape == expected.shape
    np.testing.assert_allclose(result, expected, atol=1e-6)


def test_sinc_hann_invariants():
    rate = 44100
    # DC passes at unit gain away from the edges (the sum of a sinc's samples is its gain).
    ones = resampling.resample(np.ones(rate // 10), rate, 32000, method="sinc_hann")
    np.testing.assert_allclose(ones[50:-50], 1.0, atol=2e-3)
    # A 1 kHz tone keeps its amplitude; a 20 kHz one (above 16 kHz) is removed. (The filter
    # is short: a 17 kHz tone still leaks at 0.29, as it does through torchaudio's.)
    t = np.arange(rate) / rate
    kept = resampling.resample(np.sin(2 * np.pi * 1000 * t), rate, 32000, method="sinc_hann")
    removed = resampling.resample(np.sin(2 * np.pi * 20000 * t), rate, 32000, method="sinc_hann")
    assert abs(np.abs(kept[1000:-1000]).max() - 1.0) < 2e-3
    assert np.abs(removed[1000:-1000]).max() < 0.01
    # The kernel on the fine grid: centred, and each output phase (every 320th tap) sums to
    # about 1, the DC gain.
    taps, half = resampling.sinc_hann_kernel(320, 441)
    assert len(taps) == 2 * half + 1 and np.argmax(taps) == half
    per_phase = [taps[p::320].sum() for p in range(0, 320, 17)]
    np.testing.assert_allclose(per_phase, 1.0, atol=2e-3)


def test_every_resampler_works_along_an_axis_and_keeps_the_length():
    batch = np.stack([_chirp_noise(48000, seed=s) for s in range(3)])  # (3, 12000)
    for method in resampling.RESAMPLERS:
        rows = resampling.resample(batch, 48000, 32000, method=method)
        columns = resampling.resample(batch.T, 48000, 32000, axis=0, method=method)
        assert rows.shape == (3, 8000) and rows.dtype == np.float32
        np.testing.assert_allclose(rows, columns.T, atol=1e-7)
        single = resampling.resample(batch[1], 48000, 32000, method=method)
        np.testing.assert_allclose(single, rows[1], atol=1e-7)


def test_unknown_resampler_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match="method must be one of 'sinc_hann', 'soxr_hq', "):
        resampling.resample(np.zeros(10), 44100, method="kaiser")
    with pytest.raises(ValueError, match="resampler must be one of"):
        audio.load_audio("whatever.wav", resampler="linear")


@pytest.mark.parametrize("resampler", resampling.RESAMPLERS)
@pytest.mark.parametrize("rate", [44100, 48000, 22050])
def test_a_prefix_read_equals_the_whole_file_cut(tmp_path, resampler, rate):
    path = write_wav(tmp_path / "clip.wav", _chirp_noise(rate, seconds=3.0), rate, bits=24)
    whole = audio.load_audio(path, resampler=resampler)
    for length in (1, 32000, 32001):
        cut = audio.load_audio(path, num_samples=length, resampler=resampler)
        np.testing.assert_array_equal(cut, whole[:length])
    assert audio.input_frames_needed(32000, rate, 32000, resampler) < 3 * rate


# --- soxr_hq: librosa.load(sr=32000) --------------------------------------------------------------


def _librosa():
    try:
        import librosa  # noqa: PLC0415
    except ImportError as error:
        pytest.skip(
            f"librosa is not installed ({error}); soxr_hq is checked against it where it is"
        )
    return librosa


@pytest.mark.parametrize("rate", [44100, 48000, 16000])
def test_soxr_hq_matches_librosa_load(tmp_path, rate):
    librosa = _librosa()
    stereo = np.stack([_chirp_noise(rate, 1.0, seed=1), _chirp_noise(rate, 1.0, seed=2)], axis=1)
    path = write_wav(tmp_path / "stereo.wav", stereo / 2, rate, bits=16)
    expected, _ = librosa.load(path, sr=32000)
    result = audio.load_audio(path, resampler="soxr_hq")
    assert result.shape == expected.shape
    np.testing.assert_allclose(result, expected, atol=1e-6)


@pytest.mark.parametrize("name", ["metro_station-paris.wav", "acoustic_scene.wav"])
def test_soxr_hq_matches_librosa_load_on_real_recordings(shared_data, name):
    librosa = _librosa()
    path = shared_data / "audio" / name
    expected, _ = librosa.load(path, sr=32000)
    result = audio.load_audio(path, resampler="soxr_hq")
    assert result.shape == expected.shape
    np.testing.assert_allclose(result, expected, atol=1e-6)


# --- faults found at decoding -----------------------------------------------------------------


def _float_wav(path, samples, rate=32000):
    import soundfile  # noqa: PLC0415

    soundfile.write(path, np.asarray(samples, np.float32), rate, subtype="FLOAT")
    return str(path)


def test_absurd_peak_is_refused_with_the_peak(tmp_path):
    samples = np.zeros(32000, np.float32)
    samples[1234] = 1e30
    path = _float_wav(tmp_path / "absurd.wav", samples)
    with pytest.raises(AudioDecodeError) as caught:
        audio.load_audio(path)
    assert str(caught.value) == (
        f"Cannot decode audio file {path}: its peak sample magnitude is 1e+30 (at frame 1234), "
        "far outside full scale (1.0); expected samples within +-16 (float samples in integer "
        "scale must be divided by 2**(bits - 1))"
    )
    # Float audio in 16-bit integer scale is refused the same way.
    integer_scale = _float_wav(tmp_path / "int_scale.wav", _chirp_noise(32000) * 32767)
    with pytest.raises(AudioDecodeError, match=r"peak sample magnitude is 2\d{4}\.\d \(at frame"):
        audio.read_audio(integer_scale)


def test_float_audio_up_to_the_bound_is_accepted(tmp_path):
    loud = _chirp_noise(44100, 1.0) / 0.7 * audio.MAX_PEAK * 0.99
    loud = np.clip(loud, -audio.MAX_PEAK, audio.MAX_PEAK)
    path = _float_wav(tmp_path / "loud.wav", loud, 44100)
    for resampler in audio.RESAMPLERS:
        waveform = audio.load_audio(path, resampler=resampler)
        assert np.isfinite(waveform).all() and np.abs(waveform).max() > 10


def test_header_with_zero_rate_is_reported_in_our_words(tmp_path):
    import io  # noqa: PLC0415

    import soundfile  # noqa: PLC0415

    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(100), 44100, format="WAV", subtype="PCM_16")
    contents = bytearray(buffer.getvalue())
    contents[24:28] = (0).to_bytes(4, "little")  # the fmt chunk's sampling rate
    path = tmp_path / "rate0.wav"
    path.write_bytes(bytes(contents))
    with pytest.raises(AudioDecodeError) as caught:
        audio.load_audio(path)
    message = str(caught.value)
    assert message == (
        f"Cannot decode audio file {path}: its header declares a sampling rate of 0 Hz; "
        "expected 1000 to 768000 Hz"
    )
    # A header fault libsndfile reports as "SF_INFO struct incomplete" in our words.
    assert audio._libsndfile_reason(
        RuntimeError("Internal error : SF_INFO struct incomplete.")
    ) == ("its header gives no usable sampling rate, channel count or sample format")
    assert "SF_INFO" not in message and "libsndfile cannot" not in message


# --- the resampler is recorded and keys the cache -----------------------------------------------


def test_presets_recipes_and_models_record_their_resampler():
    import keras_asc  # noqa: PLC0415
    from keras_asc.data.resampling import resampler_of  # noqa: PLC0415
    from keras_asc.layers.frontend import RESAMPLERS, LogMelSpectrogram  # noqa: PLC0415
    from keras_asc.training.recipes import get_recipe  # noqa: PLC0415

    assert RESAMPLERS == resampling.RESAMPLERS  # the layer keeps its own copy (no data import)
    expected = {
        "dcase24_baseline": "sinc_hann",
        "moflenet57": "soxr_hq",
        "cp_resnet59": "soxr_hq",
        "moflenet_128k": "soxr_hq",
        "cp_resnet_128k": "soxr_hq",
    }
    for name, resampler in expected.items():
        model = keras_asc.build(name)
        assert model.frontend.resampler == resampler_of(model) == resampler
        assert get_recipe(name).resampler == resampler
        assert get_recipe(name).to_dict()["frontend"]["resampler"] == resampler
        # A saved model's config keeps it.
        config = model.frontend.get_config()
        assert LogMelSpectrogram.from_config(config).resampler == resampler
    with pytest.raises(ValueError, match="`resampler` must be one of 'sinc_hann', 'soxr_hq'"):
        LogMelSpectrogram(resampler="linear")
    ensemble = keras_asc.build("moflenet57_cp_resnet59_v2")
    assert resampler_of(ensemble) == "soxr_hq"


def test_members_that_resample_differently_are_refused():
    import types  # noqa: PLC0415

    from keras_asc.data.resampling import resampler_of  # noqa: PLC0415

    def member(name, resampler):
        return types.SimpleNamespace(name=name, frontend=types.SimpleNamespace(resampler=resampler))

    mixed = types.SimpleNamespace(
        name="mix", members=[member("a", "soxr_hq"), member("b", "sinc_hann")]
    )
    with pytest.raises(
        ValueError, match=r"^mix: its members resample differently \(a: soxr_hq, b: sinc_hann\)"
    ):
        resampler_of(mixed)


def test_the_cache_is_keyed_by_the_resampler(synthetic_root, tmp_path):
    from keras_asc.data import pipeline, tau22  # noqa: PLC0415

    cache = tmp_path / "cache"
    first = tau22.load_split(synthetic_root, "test")[0]
    path = f"{synthetic_root}/{first.filename}"
    rows = {}
    for resampler in ("soxr_hq", "sinc_hann"):
        manifest = pipeline.prepare_cache(
            synthetic_root, "test", cache, resampler=resampler, num_workers=1, verbose=0
        )
        assert manifest["resampler"] == resampler
        assert manifest["array_path"].endswith(f"test-32000hz-1000ms-{resampler}.npy")
        array = np.load(manifest["array_path"], mmap_mode="r")
        rows[resampler] = np.array(array[0])
        expected = audio.load_audio(path, num_samples=32000, resampler=resampler)
        np.testing.assert_array_equal(rows[resampler], expected)
    # Two caches, and the rows differ: a changed choice never reads the other's audio.
    assert len(list(cache.glob("*.npy"))) == 2
    assert np.abs(rows["soxr_hq"] - rows["sinc_hann"]).max() > 1e-6
    dataset = pipeline.make_dataset(
        synthetic_root,
        "test",
        training=False,
        cache_dir=cache,
        resampler="sinc_hann",
        batch_size=4,
    )
    waveforms, _ = next(dataset.dataset.as_numpy_iterator())
    np.testing.assert_array_equal(waveforms[0], rows["sinc_hann"])


def _cli(*args):
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    return subprocess.run(
        [sys.executable, "-m", "keras_asc", *args], capture_output=True, text=True, timeout=300
    )


def test_prepare_refuses_an_absurd_clip_length_and_an_absurd_file(synthetic_root, tmp_path):
    import shutil  # noqa: PLC0415

    from keras_asc.data import tau22  # noqa: PLC0415

    result = _cli(
        "prepare",
        "--data",
        synthetic_root,
        "--split",
        "test",
        "--cache",
        str(tmp_path / "c"),
        "--clip-seconds",
        "1e9",
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Errno" not in lines[0], result.stderr
    assert "clip_seconds must be > 0 and at most 60" in lines[0]
    assert "Received: clip_seconds=1000000000.0" in lines[0]
    # A copy of the tree whose first test clip peaks at 1e30 is refused, naming the file.
    root = tmp_path / "tau22"
    shutil.copytree(synthetic_root, root)
    clip = tau22.load_split(root, "test")[0]
    samples = np.zeros(44100, np.float32)
    samples[5] = 1e30
    _float_wav(root / clip.filename, samples, 44100)
    result = _cli("prepare", "--data", str(root), "--split", "test", "--cache", str(tmp_path / "c"))
    assert result.returncode != 0
    assert (
        f"Cannot decode audio file {root / clip.filename}: its peak sample magnitude is 1e+30 "
        "(at frame 5), far outside full scale (1.0)" in result.stderr
    )
    assert not list((tmp_path / "c").glob("*.json")), "nothing may be cached silently"


def test_an_int8_export_is_read_with_its_sidecar_resampler(tmp_path):
    import types  # noqa: PLC0415

    from keras_asc.data.resampling import resampler_of  # noqa: PLC0415
    from keras_asc.layers.frontend import DCASE24_BASELINE_FRONTEND, LogMelSpectrogram  # noqa: PLC0415
    from keras_asc.quantization.frontend import (  # noqa: PLC0415
        frontend_params,
        load_frontend_params,
        save_frontend_params,
    )

    path = str(tmp_path / "m.frontend.npz")
    save_frontend_params(path, [frontend_params(LogMelSpectrogram(**DCASE24_BASELINE_FRONTEND))])
    # What TFLiteClassifier holds: the loaded sidecar as ``frontends``.
    classifier = types.SimpleNamespace(name="m_int8", frontends=load_frontend_params(path))
    assert resampler_of(classifier) == "sinc_hann"
    assert resampler_of(types.SimpleNamespace(name="plain")) == "soxr_hq"
