"""tf.data pipelines: shapes, seeded shuffling and augmentation, errors, the audio cache, fit."""

import json
import os
import shutil
import warnings

import keras
import numpy as np
import pytest

from keras_asc.augment import DeviceImpulseResponse, TimeRoll, WaveformAugmentation
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


def _batches(dataset):
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
    train = pipeline.make_dataset(synthetic_root, "split10", batch_size=4, seed=1)
    waveform_spec, label_spec = train.element_spec
    assert waveform_spec.shape == (4, 32000) and waveform_spec.dtype.name == "float32"
    assert label_spec.shape == (4,) and label_spec.dtype.name == "int32"
    assert int(train.cardinality()) == 5 and train.clips == clips
    labels = np.concatenate([labels for _, labels in _batches(train)])
    assert sorted(labels.tolist()) == sorted(clip.label for clip in clips)

    evaluation = pipeline.make_dataset(
        synthetic_root, 10, batch_size=8, training=False, include_device=True
    )
    assert evaluation.element_spec[0].shape.as_list() == [None, 32000]
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
    with pytest.warns(UserWarning, match=r"Skipped 2 of 10 clips .*not a RIFF/WAVE file") as caught:
        batches = _batches(dataset)
    assert corrupt in str(caught[0].message) and missing in str(caught[0].message)
    labels = np.concatenate([batch[1] for batch in batches]).tolist()
    assert labels == [clip.label for i, clip in enumerate(clips) if i not in (2, 7)]
    assert dataset.skipped_clips.errors == {
        missing: "file not found",
        corrupt: "not a RIFF/WAVE file (it does not start with RIFF....WAVE)",
    }
    assert dataset.skipped_clips.last_pass == (missing, corrupt)
    with pytest.warns(UserWarning, match="Skipped 2 of 10"):  # again on the next pass
        assert len(_batches(dataset)) == 3


# --- the decoded-audio cache ------------------------------------------------------------------


@tensorflow_only
def test_cache_round_trip_equals_wav_decoding_within_int16_quantisation(synthetic_root, tmp_path):
    root, clips = _small_tree(synthetic_root, tmp_path / "data", split=10)
    cache = tmp_path / "cache"
    manifest = pipeline.prepare_cache(root, 10, cache, verbose=0)
    rows = np.load(manifest["array_path"])
    assert rows.shape == (20, 32000) and rows.dtype == np.int16
    assert manifest["filenames"] == [clip.filename for clip in clips]
    assert manifest["failed"] == {} and manifest["num_samples"] == 32000
    assert sorted(os.listdir(cache)) == [
        "split10-32000hz-1000ms.json",
        "split10-32000hz-1000ms.npy",
    ]

    from_wavs = _batches(pipeline.make_dataset(root, 10, batch_size=6, training=False))
    shutil.rmtree(os.path.join(root, "audio"))  # the cache replaces the WAV files
    cached = pipeline.make_dataset(root, 10, batch_size=6, training=False, cache_dir=cache)
    assert cached.element_spec[0].shape.as_list() == [None, 32000]
    for (wave_a, label_a), (wave_b, label_b) in zip(from_wavs, _batches(cached), strict=True):
        np.testing.assert_array_equal(label_a, label_b)
        assert wave_b.dtype == np.float32
        # int16 rounding: at most half a step of 1/32768
        assert np.abs(wave_a - wave_b).max() <= 0.5 / 32768 + 1e-7

    # Shuffled training batches from the cache: static shapes, all clips once per epoch.
    train = pipeline.make_dataset(root, 10, batch_size=5, seed=2, cache_dir=cache)
    assert train.element_spec[0].shape == (5, 32000)
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
    assert np.abs(waveforms[4] - expected).max() <= 0.5 / 32768 + 1e-6


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
    monkeypatch.setattr(pipeline, "_CACHE_BLOCK", 4)
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
    original = pipeline._decode_batches

    def counting(paths, *args):
        decoded.extend(paths)
        return original(paths, *args)

    monkeypatch.setattr(pipeline, "_decode_batches", counting)
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
        clips[
            3
        ].filename: "truncated: the chunk at byte 12 declares 16 bytes but the file has only 30 bytes"
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
    history = model.fit(dataset, epochs=2, verbose=0, shuffle=False)  # the pipeline shuffles
    assert len(history.history["loss"]) == 2 and np.all(np.isfinite(history.history["loss"]))
    cached = pipeline.make_dataset(synthetic_root, 10, batch_size=4, cache_dir=tmp_path / "cache")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(cached, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])
    assert not [w for w in caught if "Skipped" in str(w.message)]  # no clip was dropped
    logits = model.predict(
        pipeline.make_dataset(synthetic_root, 5, batch_size=4, training=False), verbose=0
    )
    assert logits.shape == (10, 10)
