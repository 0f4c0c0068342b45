"""tf.data pipelines: shapes, seeded shuffling and augmentation, errors, the audio cache, fit."""

import json
import os
import shutil
import warnings

import keras
import numpy as np
import pytest
import soundfile

from keras_asc.augment import DeviceImpulseResponse, TimeRoll, WaveformAugmentation
from keras_asc.data import cache as cache_module
from keras_asc.data import pipeline, tau22
from keras_asc.data.audio import AudioDecodeError, load_audio
from keras_asc.data.synthetic import make_synthetic_tau22, write_wav

tensorflow_only = pytest.mark.tensorflow_only


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    """The smallest synthetic TAU22 tree: split5 = 10 clips, split10 = 20, split25 = 50."""
    return make_synthetic_tau22(
        tmp_path_factory.mktemp("tau22") / "data", clips_per_class=20, test_clips_per_class=9
    )


def _small_tree(root, destination, split=5):
    """A copy of one split of the synthetic tree (audio and split file only), to modify."""
    clips = tau22.load_split(root, split)
    os.makedirs(os.path.join(destination, "audio"))
    for clip in clips:
        shutil.copy(os.path.join(root, clip.filename), os.path.join(destination, clip.filename))
    shutil.copy(os.path.join(root, f"split{split}.csv"), destination)
    return str(destination), clips


def _batches(data):
    """The batches of a ``ClipDataset`` (or of a plain ``tf.data.Dataset``) as numpy tuples."""
    dataset = data.dataset if isinstance(data, pipeline.ClipDataset) else data
    return [tuple(np.asarray(part) for part in batch) for batch in dataset.as_numpy_iterator()]


class SeededNoise(WaveformAugmentation):
    """Adds seed-dependent noise: the output reveals which seed each batch received."""

    def __call__(self, waveforms, devices, seed):
        import tensorflow as tf

        return waveforms + 0.01 * tf.random.stateless_uniform(tf.shape(waveforms), seed=seed)


# --- shapes, order, determinism ---------------------------------------------------------------


@tensorflow_only
def test_batches_have_static_shapes_and_the_decoded_audio(synthetic_root):
    clips = tau22.load_split(synthetic_root, 10)
    split = tau22.Split.load(synthetic_root, "split10")
    train = pipeline.make_dataset(split, batch_size=4, seed=1)
    waveform_spec, label_spec = train.dataset.element_spec
    assert waveform_spec.shape == (4, 32000) and waveform_spec.dtype.name == "float32"
    assert label_spec.shape == (4,) and label_spec.dtype.name == "int32"
    assert int(train.dataset.cardinality()) == 5 and list(train.clips) == clips
    assert train.split is split and train.steps(4) == 5
    labels = np.concatenate([labels for _, labels in _batches(train)])
    assert sorted(labels.tolist()) == sorted(clip.label for clip in clips)

    evaluation = pipeline.make_dataset(
        synthetic_root, 10, batch_size=8, training=False, include_device=True
    )
    assert evaluation.dataset.element_spec[0].shape.as_list() == [None, 32000]
    batches = _batches(evaluation)
    assert [len(batch[0]) for batch in batches] == [8, 8, 4]
    waveforms = np.concatenate([batch[0] for batch in batches])
    assert np.concatenate([batch[1] for batch in batches]).tolist() == [c.label for c in clips]
    assert [d.decode() for batch in batches for d in batch[2]] == [c.device for c in clips]
    for index in (0, 13):
        expected = load_audio(os.path.join(synthetic_root, clips[index].filename))
        np.testing.assert_allclose(waveforms[index], expected, atol=1e-6)


@tensorflow_only
def test_shuffle_is_seeded_and_changes_every_epoch(synthetic_root):
    def epochs(seed):
        dataset = pipeline.make_dataset(synthetic_root, 10, batch_size=5, seed=seed)
        return [
            np.concatenate([labels for _, labels in _batches(dataset)]).tolist() for _ in range(2)
        ]

    first, again, other = epochs(0), epochs(0), epochs(1)
    assert first == again
    assert first[0] != first[1]
    assert first != other


@tensorflow_only
def test_augmentation_seed_depends_on_seed_epoch_and_batch(synthetic_root):
    def run(seed):
        dataset = pipeline.make_dataset(
            synthetic_root,
            5,
            batch_size=5,
            seed=seed,
            shuffle=False,
            waveform_augmentations=[SeededNoise()],
        )
        return [[batch[0] for batch in _batches(dataset)] for _ in range(2)]

    plain = _batches(pipeline.make_dataset(synthetic_root, 5, batch_size=5, training=False))
    noise = [[w - p[0] for w, p in zip(epoch, plain, strict=True)] for epoch in run(3)]
    repeat = [[w - p[0] for w, p in zip(epoch, plain, strict=True)] for epoch in run(3)]
    other = run(4)
    for epoch, epoch_again in zip(noise, repeat, strict=True):
        for batch, batch_again in zip(epoch, epoch_again, strict=True):
            np.testing.assert_array_equal(batch, batch_again)
            assert 0 <= batch.min() and batch.max() <= 0.01 + 1e-6
    assert not np.allclose(noise[0][0], noise[0][1])  # batches differ within an epoch
    assert not np.allclose(noise[0][0], noise[1][0])  # and between epochs
    assert not np.allclose(other[0][0] - plain[0][0], noise[0][0])  # and between seeds


@tensorflow_only
def test_dir_and_roll_run_batch_wise(synthetic_root, tmp_path):
    response = np.zeros(64, np.float32)
    response[10] = 0.5  # a delayed, attenuated copy: its effect on a clip is easy to predict
    write_wav(tmp_path / "delay.wav", response, 32000, bits=32)
    augmentations = [DeviceImpulseResponse(tmp_path, p=1.0), TimeRoll(p=0.0)]
    dataset = pipeline.make_dataset(
        synthetic_root,
        5,
        batch_size=5,
        shuffle=False,
        include_device=True,
        waveform_augmentations=augmentations,
    )
    plain = _batches(
        pipeline.make_dataset(synthetic_root, 5, batch_size=5, training=False, include_device=True)
    )
    for (augmented, _, devices), (original, _, _) in zip(_batches(dataset), plain, strict=True):
        assert augmented.shape == (5, 32000)
        for row, device in enumerate(devices):
            if device == b"a":
                delayed = np.concatenate([np.zeros(10), 0.5 * original[row, :-10]])
                np.testing.assert_allclose(augmented[row], delayed, atol=1e-5)
            else:
                np.testing.assert_array_equal(augmented[row], original[row])


@tensorflow_only
def test_argument_errors(synthetic_root):
    with pytest.raises(ValueError, match="waveform_augmentations are for training"):
        pipeline.make_dataset(
            synthetic_root, 5, training=False, waveform_augmentations=[TimeRoll()]
        )
    with pytest.raises(ValueError, match="on_error must be 'raise' or 'skip'"):
        pipeline.make_dataset(synthetic_root, 5, on_error="ignore")
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        pipeline.make_dataset(synthetic_root, 5, batch_size=0)
    with pytest.raises(ValueError, match="Unknown split"):
        pipeline.make_dataset(synthetic_root, 7)


# --- bad and missing files --------------------------------------------------------------------


@tensorflow_only
def test_missing_and_corrupt_files_raise_naming_the_file(synthetic_root, tmp_path):
    import tensorflow as tf

    root, clips = _small_tree(synthetic_root, tmp_path / "data")
    os.remove(os.path.join(root, clips[2].filename))
    with pytest.raises(tau22.MissingFilesError, match=r"1 of 10 audio files .* are missing"):
        pipeline.make_dataset(root, 5)
    shutil.copy(
        os.path.join(synthetic_root, clips[2].filename), os.path.join(root, clips[2].filename)
    )
    corrupt = os.path.join(root, clips[7].filename)
    with open(corrupt, "r+b") as handle:
        handle.truncate(1000)
    dataset = pipeline.make_dataset(root, 5, batch_size=2, training=False)
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        _batches(dataset)
    assert f"Cannot decode audio file {corrupt}: truncated: the data chunk" in caught.value.message


@tensorflow_only
def test_skip_drops_bad_clips_and_reports_them_after_each_pass(synthetic_root, tmp_path):
    root, clips = _small_tree(synthetic_root, tmp_path / "data")
    missing = os.path.join(root, clips[2].filename)
    os.remove(missing)
    corrupt = os.path.join(root, clips[7].filename)
    with open(corrupt, "wb") as handle:
        handle.write(b"not a wav file")
    with pytest.warns(UserWarning, match="1 of 10 audio files"):
        dataset = pipeline.make_dataset(root, 5, batch_size=3, training=False, on_error="skip")
    with pytest.warns(
        UserWarning, match=r"Skipped 2 of 10 clips .*Format not recognised"
    ) as caught:
        batches = _batches(dataset)
    assert corrupt in str(caught[0].message) and missing in str(caught[0].message)
    labels = np.concatenate([batch[1] for batch in batches]).tolist()
    assert labels == [clip.label for i, clip in enumerate(clips) if i not in (2, 7)]
    assert dataset.skipped.errors == {
        missing: "file not found",
        corrupt: "libsndfile cannot open it (Format not recognised); expected WAV, FLAC, OGG, "
        f"MP3 or another format libsndfile {soundfile.__libsndfile_version__} reads",
    }
    assert dataset.skipped.last_pass == (missing, corrupt)
    with pytest.warns(UserWarning, match="Skipped 2 of 10"):  # again on the next pass
        assert len(_batches(dataset)) == 3


# --- the decoded-audio cache ------------------------------------------------------------------


@tensorflow_only
def test_cache_round_trip_equals_wav_decoding(synthetic_root, tmp_path):
    root, clips = _small_tree(synthetic_root, tmp_path / "data", split=10)
    cache = tmp_path / "cache"
    manifest = pipeline.prepare_cache(root, 10, cache, verbose=0)
    rows = np.load(manifest["array_path"])
    assert rows.shape == (20, 32000) and rows.dtype == np.float32
    assert manifest["version"] == 2 and manifest["dtype"] == "float32"
    assert manifest["filenames"] == [clip.filename for clip in clips]
    assert manifest["failed"] == {} and manifest["num_samples"] == 32000
    assert sorted(os.listdir(cache)) == [
        "split10-32000hz-1000ms.json",
        "split10-32000hz-1000ms.npy",
    ]

    from_wavs = _batches(pipeline.make_dataset(root, 10, batch_size=6, training=False))
    shutil.rmtree(os.path.join(root, "audio"))  # the cache replaces the WAV files
    cached = pipeline.make_dataset(root, 10, batch_size=6, training=False, cache_dir=cache)
    assert cached.dataset.element_spec[0].shape.as_list() == [None, 32000]
    for (wave_a, label_a), (wave_b, label_b) in zip(from_wavs, _batches(cached), strict=True):
        np.testing.assert_array_equal(label_a, label_b)
        assert wave_b.dtype == np.float32
        np.testing.assert_array_equal(wave_a, wave_b)  # the cache holds what decoding gives

    # Shuffled training batches from the cache: static shapes, all clips once per epoch.
    train = pipeline.make_dataset(root, 10, batch_size=5, seed=2, cache_dir=cache)
    assert train.dataset.element_spec[0].shape == (5, 32000)
    epoch = _batches(train)
    assert sorted(np.concatenate([b[1] for b in epoch]).tolist()) == sorted(c.label for c in clips)
    assert [b[1].tolist() for b in epoch] == [
        b[1].tolist()
        for b in _batches(pipeline.make_dataset(root, 10, batch_size=5, seed=2, cache_dir=cache))
    ]


@tensorflow_only
def test_a_larger_split_cache_serves_a_smaller_split(synthetic_root, tmp_path):
    cache = tmp_path / "cache"
    pipeline.prepare_cache(synthetic_root, 25, cache, verbose=0)
    small = pipeline.make_dataset(synthetic_root, 5, batch_size=10, training=False, cache_dir=cache)
    ((waveforms, labels),) = _batches(small)
    assert sorted(os.listdir(cache)) == [
        "split25-32000hz-1000ms.json",
        "split25-32000hz-1000ms.npy",
    ]
    clips = tau22.load_split(synthetic_root, 5)
    assert labels.tolist() == [clip.label for clip in clips]
    expected = load_audio(os.path.join(synthetic_root, clips[4].filename))
    np.testing.assert_array_equal(waveforms[4], expected)


@tensorflow_only
def test_stale_cache_is_refused_until_overwritten(synthetic_root, tmp_path):
    root, clips = _small_tree(synthetic_root, tmp_path / "data")
    cache = tmp_path / "cache"
    pipeline.prepare_cache(root, 5, cache, verbose=0)
    split_file = os.path.join(root, "split5.csv")
    with open(split_file) as handle:
        lines = handle.readlines()
    with open(split_file, "w") as handle:
        handle.writelines(lines[:-1])  # the split file changed: one clip fewer
    with pytest.raises(ValueError, match=r"built for another file list \(10 clips.*\(9 clips"):
        pipeline.prepare_cache(root, 5, cache, verbose=0)
    # The old cache holds every clip of the new list, so the pipeline may still read it.
    dataset = pipeline.make_dataset(root, 5, batch_size=9, training=False, cache_dir=cache)
    assert len(_batches(dataset)[0][1]) == 9
    # A clip the cache lacks: the pipeline cannot use it and says how to rebuild it.
    extra = next(c for c in tau22.load_split(synthetic_root, 10) if c not in clips)
    shutil.copy(os.path.join(synthetic_root, extra.filename), os.path.join(root, extra.filename))
    with open(split_file, "a") as handle:
        handle.write(f"{extra.filename}\t{extra.scene_label}\n")
    with pytest.raises(ValueError, match="keras-asc prepare --overwrite"):
        pipeline.make_dataset(root, 5, cache_dir=cache)
    manifest = pipeline.prepare_cache(root, 5, cache, overwrite=True, verbose=0)
    assert manifest["num_clips"] == 10 and np.load(manifest["array_path"]).shape == (10, 32000)
    assert manifest["filenames"][-1] == extra.filename


@tensorflow_only
def test_interrupted_cache_build_resumes(synthetic_root, tmp_path, monkeypatch):
    root, clips = _small_tree(synthetic_root, tmp_path / "data")
    monkeypatch.setattr(cache_module, "_CACHE_BLOCK", 4)
    bad = os.path.join(root, clips[5].filename)
    os.rename(bad, bad + ".bak")
    with open(bad, "wb"):
        pass  # an empty file: decoding fails in the second block
    cache = tmp_path / "cache"
    with pytest.raises(AudioDecodeError, match="the file is empty") as caught:
        pipeline.prepare_cache(root, 5, cache, verbose=0)
    assert caught.value.path == bad
    array_path, manifest_path = pipeline.cache_paths(cache, 5)
    with open(manifest_path + ".partial") as handle:
        assert json.load(handle)["done"] == 4
    assert not os.path.exists(manifest_path)

    os.replace(bad + ".bak", bad)
    decoded = []
    original = cache_module._decode_tasks

    def counting(tasks, *args):
        decoded.extend(path for _, paths in tasks for path in paths)
        return original(tasks, *args)

    monkeypatch.setattr(cache_module, "_decode_tasks", counting)
    manifest = pipeline.prepare_cache(root, 5, cache, verbose=0)
    assert len(decoded) == 6  # the first block was kept
    assert not os.path.exists(manifest_path + ".partial")
    fresh = pipeline.prepare_cache(root, 5, tmp_path / "fresh", verbose=0)
    np.testing.assert_array_equal(np.load(manifest["array_path"]), np.load(fresh["array_path"]))


@tensorflow_only
def test_cache_records_unreadable_clips(synthetic_root, tmp_path):
    root, clips = _small_tree(synthetic_root, tmp_path / "data")
    corrupt = os.path.join(root, clips[3].filename)
    with open(corrupt, "r+b") as handle:
        handle.truncate(30)
    cache = tmp_path / "cache"
    manifest = pipeline.prepare_cache(root, 5, cache, on_error="skip", verbose=0)
    assert manifest["failed"] == {
        clips[3].filename: "truncated: the RIFF header declares 132344 bytes but the file has "
        "only 30 (libsndfile: Error in WAV file. No data chunk marker)"
    }
    with pytest.raises(AudioDecodeError, match="1 clip\\(s\\) of split 5 failed") as caught:
        pipeline.make_dataset(root, 5, cache_dir=cache)
    assert caught.value.path == corrupt
    with pytest.warns(UserWarning, match="Skipped 1 of 10 clips"):
        dataset = pipeline.make_dataset(
            root, 5, batch_size=10, training=False, cache_dir=cache, on_error="skip"
        )
    ((_, labels),) = _batches(dataset)
    assert labels.tolist() == [clip.label for i, clip in enumerate(clips) if i != 3]


def _scene_tree(root, clips):
    """A split5 tree from ``{file name: (samples, rate)}``, written as 24-bit WAVs."""
    os.makedirs(os.path.join(root, "audio"))
    with open(os.path.join(root, "split5.csv"), "w") as handle:
        handle.write("filename\tscene_label\n")
        for name, (samples, rate) in clips.items():
            write_wav(os.path.join(root, name), samples, rate, bits=24)
            handle.write(f"{name}\t{tau22.parse_filename(name).scene_label}\n")
    return str(root)


def _log_mel_error(reference, other):
    from keras_asc.layers import LogMelSpectrogram

    frontend = LogMelSpectrogram()  # the CP-JKU defaults: what the presets compute
    difference = np.abs(
        np.asarray(frontend(other, training=False))
        - np.asarray(frontend(reference, training=False))
    )
    return difference.mean(), difference.max()


@tensorflow_only
def test_the_cache_does_not_change_the_log_mel(shared_data, tmp_path):
    from keras_asc.data.audio import read_audio

    recording, rate = read_audio(shared_data / "audio" / "metro_station-paris.wav", "float64")
    recording = recording[:, 0]
    quiet_scene = recording * 10 ** (-60 / 20) / np.sqrt(np.mean(recording**2))
    spectrum = np.fft.rfft(np.random.default_rng(0).standard_normal(rate * 10))
    pink = np.fft.irfft(spectrum / np.sqrt(np.maximum(np.fft.rfftfreq(rate * 10, 1 / rate), 20)))
    quiet_noise = pink * 10 ** (-60 / 20) / np.sqrt(np.mean(pink**2))
    root = _scene_tree(
        tmp_path / "data",
        {
            "audio/metro_station-paris-100-1000-0-a.wav": (recording, rate),  # 24-bit as is
            "audio/metro_station-paris-100-1000-1-a.wav": (quiet_scene, rate),  # -60 dBFS RMS
            "audio/park-lisbon-101-1001-0-a.wav": (quiet_noise, rate),  # pink, -60 dBFS RMS
        },
    )
    arguments = dict(batch_size=3, training=False, clip_seconds=10.0)
    ((decoded, _),) = _batches(pipeline.make_dataset(root, 5, **arguments))
    pipeline.prepare_cache(
        root, 5, tmp_path / "cache", clip_seconds=10.0, num_workers=2, batch_size=1, verbose=0
    )
    shutil.rmtree(os.path.join(root, "audio"))  # the cache alone feeds the pipeline now
    ((cached, _),) = _batches(
        pipeline.make_dataset(root, 5, cache_dir=tmp_path / "cache", **arguments)
    )
    assert cached.shape == decoded.shape == (3, 320000)
    levels = 10 * np.log10(np.mean(decoded.astype(np.float64) ** 2, axis=1))
    assert np.all(np.abs(levels[1:] + 60) < 0.5), levels  # the quiet clips are at -60 dBFS
    for row in range(3):
        mean_error, max_error = _log_mel_error(decoded[row : row + 1], cached[row : row + 1])
        assert mean_error <= 1e-3 and max_error <= 1e-2, (row, mean_error, max_error)
    np.testing.assert_array_equal(cached, decoded)  # in fact: the same float32 samples
    # What the int16 cache of format version 1 did to the 24-bit recording, for contrast.
    old_format = np.round(decoded[:1].astype(np.float64) * 32768) / 32768
    assert _log_mel_error(decoded[:1], old_format.astype(np.float32))[1] > 1e-2


@tensorflow_only
def test_an_int16_cache_of_format_version_1_is_rebuilt(synthetic_root, tmp_path):
    root, clips = _small_tree(synthetic_root, tmp_path / "data")
    cache = tmp_path / "cache"
    manifest = pipeline.prepare_cache(root, 5, cache, verbose=0)
    array_path, manifest_path = manifest["array_path"], manifest["manifest_path"]
    expected = np.load(array_path)
    # Turn it into what keras-asc wrote before: int16 samples, format version 1.
    np.save(array_path, np.round(expected * 32768).astype(np.int16))
    old = {key: manifest[key] for key in manifest if key not in ("array_path", "manifest_path")}
    old.update(version=1, dtype="int16", scale=32768.0)
    with open(manifest_path, "w") as handle:
        json.dump(old, handle)
    with pytest.warns(UserWarning, match=r"format version 1 \(int16 samples, which drop the low 8"):
        dataset = pipeline.make_dataset(root, 5, batch_size=10, training=False, cache_dir=cache)
    ((waveforms, _),) = _batches(dataset)
    np.testing.assert_array_equal(waveforms, expected)
    with open(manifest_path) as handle:
        assert json.load(handle)["version"] == 2
    assert np.load(array_path).dtype == np.float32
    # A cache from a newer keras-asc is left alone.
    with open(manifest_path, "w") as handle:
        json.dump(dict(old, version=99), handle)
    with pytest.raises(ValueError, match="format version 99, written by a newer keras-asc"):
        pipeline.prepare_cache(root, 5, cache, verbose=0)


@tensorflow_only
def test_the_process_pool_builds_the_same_cache_as_one_process(
    synthetic_root, tmp_path, monkeypatch
):
    pools = []
    original = cache_module._pool_context
    monkeypatch.setattr(cache_module, "_pool_context", lambda: pools.append(1) or original())
    one = pipeline.prepare_cache(synthetic_root, 10, tmp_path / "one", num_workers=1, verbose=0)
    assert not pools
    pool = pipeline.prepare_cache(
        synthetic_root, 10, tmp_path / "pool", num_workers=2, batch_size=3, verbose=0
    )
    assert pools  # the second build ran in worker processes
    np.testing.assert_array_equal(np.load(one["array_path"]), np.load(pool["array_path"]))
    with pytest.raises(ValueError, match="num_workers must be a positive integer"):
        pipeline.prepare_cache(synthetic_root, 10, tmp_path / "bad", num_workers=0)


@tensorflow_only
def test_the_tf_data_decoder_has_a_static_shape_and_names_bad_files(synthetic_root, tmp_path):
    import tensorflow as tf

    good = os.path.join(synthetic_root, tau22.load_split(synthetic_root, 5)[0].filename)
    bad = str(tmp_path / "bad.wav")
    with open(good, "rb") as source, open(bad, "wb") as target:
        target.write(source.read()[:1000])
    paths = tf.data.Dataset.from_tensor_slices([good, bad, good])
    skipping = paths.map(pipeline._clip_decoder(32000, 32000, False), num_parallel_calls=2)
    assert skipping.element_spec[0].shape == (32000,)
    (first, reason_a), (silent, reason_b), _ = list(skipping.as_numpy_iterator())
    np.testing.assert_array_equal(first, load_audio(good))
    assert reason_a == b"" and not silent.any()
    assert reason_b.decode().startswith("truncated: the data chunk declares 132300 bytes")
    raising = paths.map(pipeline._clip_decoder(32000, 32000, True), num_parallel_calls=2)
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        list(raising)
    assert f"Cannot decode audio file {bad}: truncated: the data chunk" in caught.value.message


@tensorflow_only
def test_prepare_command(synthetic_root, tmp_path, capsys):
    from keras_asc.cli import main

    cache = tmp_path / "cache"
    argv = ["prepare", "--data", synthetic_root, "--split", "split5", "--cache", str(cache)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Cached 10 clips" in out and f"wrote {cache}/split5-32000hz-1000ms.npy" in out
    assert main(argv) == 0
    assert "is up to date (10 clips)" in capsys.readouterr().out
    assert (
        main(
            ["prepare", "--data", str(tmp_path / "nowhere"), "--split", "5", "--cache", str(cache)]
        )
        == 2
    )
    assert "keras-asc prepare: error:" in capsys.readouterr().err


# --- model.fit on every backend ---------------------------------------------------------------


def _tiny_model():
    inputs = keras.Input((32000,))
    x = keras.layers.Reshape((32000, 1))(inputs)
    x = keras.layers.Conv1D(4, 64, strides=32, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(inputs, keras.layers.Dense(10)(x))
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def test_fit_on_the_current_backend(synthetic_root, tmp_path):
    keras.utils.set_random_seed(0)
    model = _tiny_model()
    dataset = pipeline.make_dataset(
        synthetic_root, 10, batch_size=4, seed=0, waveform_augmentations=[TimeRoll()]
    )
    history = model.fit(
        dataset.dataset, epochs=2, verbose=0, shuffle=False
    )  # the pipeline shuffles
    assert len(history.history["loss"]) == 2 and np.all(np.isfinite(history.history["loss"]))
    cached = pipeline.make_dataset(synthetic_root, 10, batch_size=4, cache_dir=tmp_path / "cache")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(cached.dataset, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])
    assert not [w for w in caught if "Skipped" in str(w.message)]  # no clip was dropped
    logits = model.predict(
        pipeline.make_dataset(synthetic_root, 5, batch_size=4, training=False).dataset, verbose=0
    )
    assert logits.shape == (10, 10)
