"""Augmentations: device impulse responses, time roll, Freq-MixStyle."""

import collections
import json
import math
import wave

import keras
import numpy as np
import pytest
import scipy.signal
from keras import ops

from keras_asc.augment import DeviceImpulseResponse, FreqMixStyle, TimeRoll, WaveformAugmentation
from keras_asc.augment.mixstyle import mix_frequency_statistics
from keras_asc.data.audio import AudioDecodeError
from keras_asc.data.synthetic import write_wav

DEVICES = ["a", "b", "c", "s1", "a", "s2", "a", "s3"]
IR_LENGTHS = (37, 120, 301)


def _tf():
    import tensorflow as tf

    return tf


def _waveforms(batch_size, num_samples, seed=0):
    return (
        np.random.default_rng(seed).uniform(-0.5, 0.5, (batch_size, num_samples)).astype(np.float32)
    )


def _impulse_response(length, seed):
    rng = np.random.default_rng(seed)
    response = rng.normal(size=length) * np.exp(-np.arange(length) / (length / 4))
    response[0] = 1.0
    return (0.5 * response / np.max(np.abs(response))).astype(np.float32)


@pytest.fixture(scope="module")
def ir_directory(tmp_path_factory):
    """Three 24-bit impulse responses at 32 kHz (no resampling, so comparisons are exact)."""
    directory = tmp_path_factory.mktemp("irs")
    for index, length in enumerate(IR_LENGTHS):
        write_wav(directory / f"ir_{index}.wav", _impulse_response(length, index), 32000, bits=24)
    (directory / "notes.txt").write_text("not a wav")
    return directory


def _seed(a, b=0):
    return _tf().constant([a, b], dtype=_tf().int64)


# --- Device impulse response ------------------------------------------------------------------


@pytest.mark.tensorflow_only
def test_dir_loads_every_wav_sorted_and_zero_padded(ir_directory):
    dir_augment = DeviceImpulseResponse(ir_directory)
    assert dir_augment.filenames == ["ir_0.wav", "ir_1.wav", "ir_2.wav"]
    assert dir_augment.lengths.numpy().tolist() == list(IR_LENGTHS)
    assert dir_augment.impulse_responses.shape == (3, max(IR_LENGTHS))
    responses = dir_augment.impulse_responses.numpy()
    for index, length in enumerate(IR_LENGTHS):
        # 24-bit PCM keeps the response to within one quantisation step (2**-23).
        np.testing.assert_allclose(
            responses[index, :length], _impulse_response(length, index), atol=2**-22
        )
        assert np.all(responses[index, length:] == 0)


@pytest.mark.tensorflow_only
def test_dir_convolves_only_device_a_and_matches_numpy(ir_directory):
    dir_augment = DeviceImpulseResponse(ir_directory, p=1.0)
    waveforms = _waveforms(len(DEVICES), 2000)
    augmented = dir_augment(waveforms, DEVICES, _seed(3)).numpy()
    draws = dir_augment.draw(DEVICES, _seed(3))
    chosen = draws["impulse_response"].numpy()
    assert draws["apply"].numpy().tolist() == [device == "a" for device in DEVICES]
    responses = dir_augment.impulse_responses.numpy()
    lengths = dir_augment.lengths.numpy()
    for row, device in enumerate(DEVICES):
        if device == "a":
            response = responses[chosen[row], : lengths[chosen[row]]]
            expected = np.convolve(waveforms[row].astype(np.float64), response)[:2000]
            np.testing.assert_allclose(augmented[row], expected, atol=1e-5)
            assert not np.array_equal(augmented[row], waveforms[row])
        else:
            np.testing.assert_array_equal(augmented[row], waveforms[row])


@pytest.mark.tensorflow_only
def test_dir_with_one_response_equals_numpy_convolve(tmp_path):
    response = _impulse_response(500, seed=7)
    write_wav(tmp_path / "only.wav", response, 32000, bits=24)
    dir_augment = DeviceImpulseResponse(tmp_path, p=1.0, devices=("a", "b"))
    waveforms = _waveforms(3, 1000, seed=1)
    augmented = dir_augment(waveforms, ["a", "b", "c"], _seed(0)).numpy()
    loaded = dir_augment.impulse_responses.numpy()[0]
    for row in (0, 1):
        expected = np.convolve(waveforms[row].astype(np.float64), loaded)[:1000]
        np.testing.assert_allclose(augmented[row], expected, atol=1e-5)
        # The output is not normalised: its scale is the convolution's own.
        assert abs(np.max(np.abs(augmented[row])) - np.max(np.abs(expected))) < 1e-5
    np.testing.assert_array_equal(augmented[2], waveforms[2])


@pytest.mark.tensorflow_only
def test_dir_p_zero_is_identity(ir_directory):
    waveforms = _waveforms(len(DEVICES), 500)
    augmented = DeviceImpulseResponse(ir_directory, p=0.0)(waveforms, DEVICES, _seed(1)).numpy()
    np.testing.assert_array_equal(augmented, waveforms)


@pytest.mark.tensorflow_only
def test_dir_fraction_of_changed_clips_is_p_and_choice_is_uniform(ir_directory):
    dir_augment = DeviceImpulseResponse(ir_directory, p=0.6)
    waveforms = _waveforms(200, 400, seed=2)
    augmented = dir_augment(waveforms, ["a"] * 200, _seed(11)).numpy()
    changed = np.any(augmented != waveforms, axis=1)
    assert abs(changed.mean() - 0.6) < 0.1
    draws = dir_augment.draw(["a"] * 200, _seed(11))
    np.testing.assert_array_equal(changed, draws["apply"].numpy())
    counts = np.bincount(draws["impulse_response"].numpy(), minlength=3)
    assert counts.min() > 40  # 200 / 3 = 67 expected per response


@pytest.mark.tensorflow_only
def test_dir_is_deterministic_per_seed(ir_directory):
    dir_augment = DeviceImpulseResponse(ir_directory, p=0.6)
    waveforms = _waveforms(16, 300)
    devices = ["a"] * 16
    first = dir_augment(waveforms, devices, _seed(5, 9)).numpy()
    again = dir_augment(waveforms, devices, _seed(5, 9)).numpy()
    other = dir_augment(waveforms, devices, _seed(6, 9)).numpy()
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.tensorflow_only
def test_dir_runs_inside_dataset_map_with_static_shapes(ir_directory):
    tf = _tf()
    dir_augment = DeviceImpulseResponse(ir_directory, p=1.0)
    waveforms = _waveforms(16, 800)
    devices = DEVICES * 2
    dataset = tf.data.Dataset.from_tensor_slices((waveforms, devices)).batch(8)
    dataset = dataset.enumerate().map(
        lambda step, batch: dir_augment(
            batch[0], batch[1], tf.stack([tf.constant(42, tf.int64), step])
        )
    )
    assert dataset.element_spec.shape.as_list() == [None, 800]
    batches = list(dataset.as_numpy_iterator())
    for step, batch in enumerate(batches):
        eager = dir_augment(
            waveforms[8 * step : 8 * step + 8], devices[:8], _seed(42, step)
        ).numpy()
        np.testing.assert_allclose(batch, eager, atol=1e-6)
        assert not np.array_equal(batch[0], waveforms[8 * step])
        np.testing.assert_array_equal(batch[1], waveforms[8 * step + 1])


@pytest.mark.tensorflow_only
def test_waveform_augmentations_accept_unknown_clip_length(ir_directory):
    tf = _tf()
    waveforms = _waveforms(len(DEVICES), 700)
    for augmentation in (DeviceImpulseResponse(ir_directory, p=1.0), TimeRoll()):
        traced = tf.function(
            augmentation.__call__,
            input_signature=[
                tf.TensorSpec((None, None), tf.float32),
                tf.TensorSpec((None,), tf.string),
                tf.TensorSpec((2,), tf.int64),
            ],
        )
        expected = augmentation(waveforms, DEVICES, _seed(4)).numpy()
        np.testing.assert_allclose(
            traced(waveforms, DEVICES, _seed(4)).numpy(), expected, atol=1e-6
        )


@pytest.mark.tensorflow_only
def test_dir_with_the_66_micirp_responses(shared_data):
    dir_augment = DeviceImpulseResponse(shared_data / "micirp_dirs", p=1.0)
    assert dir_augment.num_impulse_responses == 66
    lengths = dir_augment.lengths.numpy()
    # 61 responses at 44.1 kHz and 5 at 48 kHz (0.34-0.50 s), each resampled to 32 kHz.
    rates, expected_lengths = [], []
    for name in dir_augment.filenames:
        with wave.open(str(shared_data / "micirp_dirs" / name)) as reader:
            rates.append(reader.getframerate())
            expected_lengths.append(math.ceil(reader.getnframes() * 32000 / reader.getframerate()))
    assert sorted(collections.Counter(rates).items()) == [(44100, 61), (48000, 5)]
    assert lengths.tolist() == expected_lengths
    assert 0.34 * 32000 <= lengths.min() and lengths.max() == 16000
    assert dir_augment.impulse_responses.shape == (66, lengths.max())
    assert np.all(np.isfinite(dir_augment.impulse_responses.numpy()))
    waveforms = _waveforms(4, 32000, seed=3)
    devices = ["a", "b", "a", "s1"]
    augmented = dir_augment(waveforms, devices, _seed(8)).numpy()
    chosen = dir_augment.draw(devices, _seed(8))["impulse_response"].numpy()
    for row in (0, 2):
        response = dir_augment.impulse_responses.numpy()[chosen[row], : lengths[chosen[row]]]
        # float64 FFT reference: numpy.convolve of 32,000 x 16,000 samples takes seconds.
        expected = scipy.signal.fftconvolve(waveforms[row].astype(np.float64), response)[:32000]
        np.testing.assert_allclose(augmented[row], expected, atol=1e-4 * np.max(np.abs(expected)))
    np.testing.assert_array_equal(augmented[[1, 3]], waveforms[[1, 3]])
    # The 1-s result's head against numpy.convolve directly, on a short clip.
    short = waveforms[:1, :3000]
    index = dir_augment.draw(["a"], _seed(9))["impulse_response"].numpy()[0]
    response = dir_augment.impulse_responses.numpy()[index, : lengths[index]]
    expected = np.convolve(short[0].astype(np.float64), response)[:3000]
    np.testing.assert_allclose(
        dir_augment(short, ["a"], _seed(9)).numpy()[0],
        expected,
        atol=1e-4 * np.max(np.abs(expected)),
    )


@pytest.mark.tensorflow_only
def test_dir_resamples_responses_to_the_sampling_rate(tmp_path):
    write_wav(tmp_path / "r44.wav", _impulse_response(4410, 1), 44100, bits=24)
    write_wav(tmp_path / "r48.wav", _impulse_response(4800, 2), 48000, bits=24)
    dir_augment = DeviceImpulseResponse(tmp_path)
    assert dir_augment.lengths.numpy().tolist() == [3200, 3200]


def test_dir_errors_name_the_directory_and_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        DeviceImpulseResponse(tmp_path / "missing")
    (tmp_path / "readme.txt").write_text("no responses here")
    with pytest.raises(ValueError, match=r"contains no \.wav files"):
        DeviceImpulseResponse(tmp_path)
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00not a wav file")
    with pytest.raises(AudioDecodeError, match="broken.wav"):
        DeviceImpulseResponse(tmp_path)


def test_dir_validates_arguments(ir_directory):
    with pytest.raises(ValueError, match=r"Received: p=1\.5"):
        DeviceImpulseResponse(ir_directory, p=1.5)
    with pytest.raises(ValueError, match="Received: devices='a'"):
        DeviceImpulseResponse(ir_directory, devices="a")
    with pytest.raises(ValueError, match=r"Received: devices=\(\)"):
        DeviceImpulseResponse(ir_directory, devices=())
    with pytest.raises(ValueError, match="Received: sampling_rate=0"):
        DeviceImpulseResponse(ir_directory, sampling_rate=0)
    with pytest.raises(ValueError, match=r"Received: shape=\(500,\)"):
        DeviceImpulseResponse(ir_directory)(np.zeros(500, np.float32), ["a"], _seed(0))
    with pytest.raises(ValueError, match="one device id per clip"):
        DeviceImpulseResponse(ir_directory)(np.zeros((2, 500), np.float32), ["a"], _seed(0))


def test_dir_config_round_trip(ir_directory):
    dir_augment = DeviceImpulseResponse(ir_directory, p=0.4, devices=("a", "b"))
    config = dir_augment.get_config()
    assert config == {
        "directory": str(ir_directory),
        "p": 0.4,
        "devices": ["a", "b"],
        "sampling_rate": 32000,
    }
    rebuilt = DeviceImpulseResponse.from_config(json.loads(json.dumps(config)))
    assert rebuilt.get_config() == config
    assert isinstance(rebuilt, WaveformAugmentation)
    assert repr(rebuilt).startswith("DeviceImpulseResponse(directory=")


# --- Time roll --------------------------------------------------------------------------------


@pytest.mark.tensorflow_only
def test_time_roll_is_a_circular_shift_within_range_preserving_energy():
    roll = TimeRoll()
    assert roll.max_shift == 4000
    waveforms = _waveforms(32, 32000, seed=4)
    rolled = roll(waveforms, ["a"] * 32, _seed(1)).numpy()
    shifts = roll.draw(32, _seed(1))["shift"].numpy()
    assert np.all(np.abs(shifts) <= 4000)
    for row in range(32):
        np.testing.assert_array_equal(rolled[row], np.roll(waveforms[row], shifts[row]))
        # A permutation of the samples: the same multiset, hence exactly the same energy.
        np.testing.assert_array_equal(np.sort(rolled[row]), np.sort(waveforms[row]))
    energy = np.sum(waveforms.astype(np.float64) ** 2, axis=1)
    np.testing.assert_allclose(np.sum(rolled.astype(np.float64) ** 2, axis=1), energy, rtol=1e-12)


@pytest.mark.tensorflow_only
def test_time_roll_shift_found_from_output_alone():
    # Recover the shift by matching, independently of draw(): a true circular shift, |s| <= 4000.
    waveforms = _waveforms(4, 32000, seed=5)
    rolled = TimeRoll()(waveforms, ["b"] * 4, _seed(2)).numpy()
    for row in range(4):
        matches = [
            s for s in range(-4000, 4001) if rolled[row, 5000] == waveforms[row, (5000 - s) % 32000]
        ]
        assert len(matches) == 1
        np.testing.assert_array_equal(rolled[row], np.roll(waveforms[row], matches[0]))


@pytest.mark.tensorflow_only
def test_time_roll_shifts_are_uniform():
    shifts = TimeRoll().draw(4000, _seed(3))["shift"].numpy()
    assert shifts.min() >= -4000 and shifts.max() <= 4000
    assert shifts.min() < -3900 and shifts.max() > 3900
    assert abs(shifts.mean()) < 100  # standard error ~ 2309 / sqrt(4000) = 37
    assert abs(shifts.std() - 4001 / np.sqrt(3)) < 0.05 * 4001 / np.sqrt(3)
    assert (shifts > 0).mean() > 0.45 and (shifts < 0).mean() > 0.45


@pytest.mark.tensorflow_only
def test_time_roll_seed_and_p():
    roll = TimeRoll(max_shift_seconds=0.01, sampling_rate=16000, p=0.5)
    assert roll.max_shift == 160
    waveforms = _waveforms(400, 320)
    first = roll(waveforms, ["a"] * 400, _seed(4)).numpy()
    np.testing.assert_array_equal(first, roll(waveforms, ["a"] * 400, _seed(4)).numpy())
    assert not np.array_equal(first, roll(waveforms, ["a"] * 400, _seed(5)).numpy())
    unchanged = np.all(first == waveforms, axis=1)
    # p = 0.5 plus the 1/321 chance of a zero shift.
    assert abs(unchanged.mean() - 0.5) < 0.1
    np.testing.assert_array_equal(
        TimeRoll(p=0.0)(waveforms, ["a"] * 400, _seed(4)).numpy(), waveforms
    )


@pytest.mark.tensorflow_only
def test_time_roll_inside_dataset_map():
    tf = _tf()
    roll = TimeRoll()
    waveforms = _waveforms(8, 32000)
    dataset = tf.data.Dataset.from_tensor_slices((waveforms, DEVICES)).batch(4)
    dataset = dataset.enumerate().map(
        lambda step, batch: roll(batch[0], batch[1], tf.stack([step, step]))
    )
    assert dataset.element_spec.shape.as_list() == [None, 32000]
    for step, batch in enumerate(dataset.as_numpy_iterator()):
        eager = roll(waveforms[4 * step : 4 * step + 4], DEVICES[:4], _seed(step, step)).numpy()
        np.testing.assert_array_equal(batch, eager)


def test_time_roll_validates_and_round_trips():
    with pytest.raises(ValueError, match=r"Received: max_shift_seconds=-0\.1"):
        TimeRoll(max_shift_seconds=-0.1)
    with pytest.raises(ValueError, match=r"Received: sampling_rate=32000\.5"):
        TimeRoll(sampling_rate=32000.5)
    with pytest.raises(ValueError, match=r"Received: p=-0\.2"):
        TimeRoll(p=-0.2)
    config = TimeRoll(max_shift_seconds=0.1, p=0.5).get_config()
    assert config == {"max_shift_seconds": 0.1, "sampling_rate": 32000, "p": 0.5}
    assert TimeRoll.from_config(config).get_config() == config
    assert repr(TimeRoll()) == "TimeRoll(max_shift_seconds=0.125, sampling_rate=32000, p=1.0)"


# --- Freq-MixStyle ----------------------------------------------------------------------------


def _log_mels(batch_size=6, freq=5, time=40, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    # Each example and band gets its own offset and scale so the statistics differ clearly.
    offsets = rng.uniform(-3, 3, (batch_size, freq, 1, 1))
    scales = rng.uniform(0.5, 2.0, (batch_size, freq, 1, 1))
    return (offsets + scales * rng.normal(size=(batch_size, freq, time, channels))).astype(
        np.float32
    )


def _band_statistics(x):
    x = np.asarray(x, dtype=np.float64)
    return x.mean(axis=(2, 3)), x.std(axis=(2, 3), ddof=1)


def test_mixstyle_lambda_one_keeps_own_statistics():
    x = _log_mels()
    partner = np.array([1, 0, 3, 2, 5, 4], dtype="int32")
    y = ops.convert_to_numpy(mix_frequency_statistics(x, np.ones((6, 1, 1, 1), "float32"), partner))
    np.testing.assert_allclose(y, x, atol=1e-5)
    mean, std = _band_statistics(y)
    expected_mean, expected_std = _band_statistics(x)
    np.testing.assert_allclose(mean, expected_mean, atol=1e-5)
    np.testing.assert_allclose(std, expected_std, rtol=1e-5)


def test_mixstyle_lambda_zero_takes_partner_statistics():
    x = _log_mels(channels=2)
    partner = np.array([2, 3, 4, 5, 0, 1], dtype="int32")
    y = ops.convert_to_numpy(
        mix_frequency_statistics(x, np.zeros((6, 1, 1, 1), "float32"), partner)
    )
    mean, std = _band_statistics(y)
    own_mean, own_std = _band_statistics(x)
    np.testing.assert_allclose(mean, own_mean[partner], atol=1e-4)
    # sigma = sqrt(var + 1e-6): with variances >= 0.25 the eps shifts std by < 2e-6.
    np.testing.assert_allclose(std, own_std[partner], rtol=1e-4)
    assert np.max(np.abs(mean - own_mean)) > 0.5


def test_mixstyle_mixes_statistics_linearly():
    x = _log_mels()
    weight = np.linspace(0.1, 0.9, 6).reshape(6, 1, 1, 1).astype("float32")
    partner = np.array([5, 4, 3, 2, 1, 0], dtype="int32")
    y = ops.convert_to_numpy(mix_frequency_statistics(x, weight, partner))
    mean, std = _band_statistics(y)
    own_mean, own_std = _band_statistics(x)
    w = weight.reshape(6, 1)
    np.testing.assert_allclose(mean, w * own_mean + (1 - w) * own_mean[partner], atol=1e-4)
    np.testing.assert_allclose(std, w * own_std + (1 - w) * own_std[partner], rtol=1e-4)


def test_mixstyle_matches_the_formula_with_unbiased_variance():
    # Small values (variance ~ eps) make the unbiased variance and the eps visible in the output.
    x = 1e-3 * _log_mels(time=4, channels=2, seed=2)
    weight = np.array([0.0, 0.2, 0.5, 0.7, 1.0, 0.35], "float32").reshape(6, 1, 1, 1)
    partner = np.array([3, 0, 5, 1, 2, 4], dtype="int32")
    y = ops.convert_to_numpy(mix_frequency_statistics(x, weight, partner, eps=1e-6))
    x64 = x.astype(np.float64)
    mu = x64.mean(axis=(2, 3), keepdims=True)
    sigma = np.sqrt(x64.var(axis=(2, 3), ddof=1, keepdims=True) + 1e-6)
    expected = (x64 - mu) / sigma * (weight * sigma + (1 - weight) * sigma[partner]) + (
        weight * mu + (1 - weight) * mu[partner]
    )
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-8)
    biased_sigma = np.sqrt(x64.var(axis=(2, 3), keepdims=True) + 1e-6)
    biased = (
        (x64 - mu) / biased_sigma * (weight * biased_sigma + (1 - weight) * biased_sigma[partner])
    )
    assert np.max(np.abs(biased + weight * mu + (1 - weight) * mu[partner] - expected)) > 1e-5


def test_mixstyle_layer_output_is_the_transform_of_its_draws():
    x = _log_mels(batch_size=8)
    layer = FreqMixStyle(alpha=0.3, p=1.0, seed=7)
    y = ops.convert_to_numpy(layer(x, training=True))
    assert y.shape == x.shape and y.dtype == np.float32
    draws = FreqMixStyle(alpha=0.3, p=1.0, seed=7).draw(8)
    assert bool(ops.convert_to_numpy(draws["apply"]))
    partner = ops.convert_to_numpy(draws["partner"])
    weight = ops.convert_to_numpy(draws["lambda"])
    assert sorted(partner.tolist()) == list(range(8))
    assert weight.shape == (8, 1, 1, 1) and np.all((weight >= 0) & (weight <= 1))
    expected = ops.convert_to_numpy(mix_frequency_statistics(x, weight, partner))
    np.testing.assert_allclose(y, expected, atol=1e-5)
    assert np.max(np.abs(y - x)) > 0.1


def test_mixstyle_is_identity_at_inference_and_with_p_zero():
    x = _log_mels()
    layer = FreqMixStyle(p=1.0, seed=0)
    np.testing.assert_array_equal(ops.convert_to_numpy(layer(x, training=False)), x)
    np.testing.assert_array_equal(ops.convert_to_numpy(layer(x)), x)
    np.testing.assert_array_equal(
        ops.convert_to_numpy(FreqMixStyle(p=0.0, seed=0)(x, training=True)), x
    )


def test_mixstyle_draw_statistics():
    # One batch shape throughout: JAX compiles the Beta sampler once per shape.
    layer = FreqMixStyle(alpha=0.3, p=0.4, seed=3)
    draws = [layer.draw(8) for _ in range(120)]
    applied = np.array([bool(ops.convert_to_numpy(d["apply"])) for d in draws])
    assert abs(applied.mean() - 0.4) < 0.13  # standard error 0.045
    weight = np.concatenate([ops.convert_to_numpy(d["lambda"]).ravel() for d in draws])
    # Beta(0.3, 0.3): mean 0.5, variance 1 / (4 (2 alpha + 1)) = 0.156, mass near 0 and 1.
    assert abs(weight.mean() - 0.5) < 0.04  # standard error 0.013
    assert abs(weight.var() - 1 / 6.4) < 0.03
    assert np.mean((weight < 0.1) | (weight > 0.9)) > 0.4
    partners = np.stack([ops.convert_to_numpy(d["partner"]) for d in draws])
    assert all(sorted(row.tolist()) == list(range(8)) for row in partners)
    # Partners are uniform over the batch: each index lands in each position ~120 / 8 times.
    assert np.all(np.sum(partners == np.arange(8)[None, :], axis=0) < 40)


def _input_gradient(function, x):
    backend = keras.backend.backend()
    if backend == "tensorflow":
        tf = _tf()
        x = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = function(x)
        return tape.gradient(value, x).numpy()
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(function)(jax.numpy.asarray(x)))
    if backend == "torch":
        import torch

        x = torch.tensor(x, requires_grad=True)
        function(x).backward()
        return x.grad.numpy()
    pytest.skip(f"no gradient helper for backend {backend}")


def test_mixstyle_statistics_carry_no_gradient():
    x = _log_mels()
    weight = np.full((6, 1, 1, 1), 0.3, "float32")
    partner = np.array([1, 2, 3, 4, 5, 0], dtype="int32")
    upstream = np.random.default_rng(1).normal(size=x.shape).astype("float32")
    gradient = _input_gradient(
        lambda t: ops.sum(ops.multiply(mix_frequency_statistics(t, weight, partner), upstream)), x
    )
    # With mu and sigma constant the transform is x * A + B, A = (lambda s + (1-lambda) s_p) / s.
    _, std = _band_statistics(x)
    sigma = np.sqrt(std**2 + 1e-6)
    scale = (0.3 * sigma + 0.7 * sigma[partner]) / sigma
    np.testing.assert_allclose(gradient, upstream * scale[:, :, None, None], rtol=1e-4, atol=1e-5)


def test_mixstyle_validates_arguments():
    with pytest.raises(ValueError, match="Received: alpha=0"):
        FreqMixStyle(alpha=0)
    with pytest.raises(ValueError, match=r"Received: p=1\.2"):
        FreqMixStyle(p=1.2)
    with pytest.raises(ValueError, match=r"Received: p=-0\.1"):
        FreqMixStyle(p=-0.1)
    with pytest.raises(ValueError, match=r"Received: eps=0\.0"):
        FreqMixStyle(eps=0.0)
    with pytest.raises(ValueError, match="Received: input_shape"):
        FreqMixStyle()(np.zeros((2, 5, 4), "float32"), training=True)
    with pytest.raises(ValueError, match="at least two values"):
        FreqMixStyle()(np.zeros((2, 5, 1, 1), "float32"), training=True)


def test_mixstyle_serialisation_round_trip():
    layer = FreqMixStyle(alpha=0.4, p=0.8, seed=5, name="mixstyle")
    config = layer.get_config()
    assert {k: config[k] for k in ("alpha", "p", "eps", "seed")} == {
        "alpha": 0.4,
        "p": 0.8,
        "eps": 1e-6,
        "seed": 5,
    }
    serialized = json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
    assert serialized["registered_name"] == "keras_asc>FreqMixStyle"
    rebuilt = keras.saving.deserialize_keras_object(serialized)
    assert isinstance(rebuilt, FreqMixStyle) and rebuilt.get_config() == config


def test_mixstyle_in_a_functional_model_fits_and_saves(tmp_path):
    inputs = keras.Input((5, 12, 1))
    hidden = FreqMixStyle(alpha=0.3, p=1.0, seed=1, name="mixstyle")(inputs)
    outputs = keras.layers.Dense(3)(keras.layers.Flatten()(hidden))
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    x = _log_mels(batch_size=4, time=12)
    labels = np.array([0, 1, 2, 1])
    kernel_before = ops.convert_to_numpy(model.layers[-1].kernel).copy()
    history = model.fit(x, labels, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert not np.array_equal(ops.convert_to_numpy(model.layers[-1].kernel), kernel_before)
    path = tmp_path / "mixstyle.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    assert reloaded.get_layer("mixstyle").get_config() == model.get_layer("mixstyle").get_config()
    np.testing.assert_allclose(
        reloaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6
    )
