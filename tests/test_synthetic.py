"""The built-in synthetic TAU22-layout dataset and the 24-bit WAV writer."""

import collections
import hashlib
import os
import wave

import numpy as np
import pytest
import scipy.io.wavfile

from keras_asc.data import tau22
from keras_asc.data.synthetic import MARKER_FILE, make_synthetic_tau22, write_wav

SMALL = dict(clips_per_class=20, test_clips_per_class=9)


# ----------------------------------------------------------------------------- write_wav


def test_write_wav_24_bit_exact_bytes(tmp_path):
    path = tmp_path / "edges.wav"
    values = np.array([-(2**23), -1, 0, 1, 2**23 - 1], dtype=np.int32)
    assert write_wav(path, values, 44100) == os.fspath(path)
    raw = path.read_bytes()
    assert raw[:4] == b"RIFF" and raw[8:16] == b"WAVEfmt "
    assert int.from_bytes(raw[4:8], "little") == len(raw) - 8
    assert raw[44:59] == bytes.fromhex("000080ffffff000000010000ffff7f")
    assert raw[59:] == b"\x00"  # 15 data bytes, padded to an even chunk size
    with wave.open(str(path)) as reader:
        assert reader.getnchannels() == 1
        assert reader.getsampwidth() == 3
        assert reader.getframerate() == 44100
        assert reader.getnframes() == 5
    rate, data = scipy.io.wavfile.read(path)
    assert rate == 44100
    np.testing.assert_array_equal(data >> 8, values)


def test_write_wav_float_scaling_and_clipping(tmp_path):
    path = tmp_path / "float.wav"
    write_wav(path, np.array([0.5, -0.5, 1.0, -1.0, 2.0, 1e-7]), 32000)
    _, data = scipy.io.wavfile.read(path)
    np.testing.assert_array_equal(data >> 8, [2**22, -(2**22), 2**23 - 1, -(2**23), 2**23 - 1, 1])


def test_write_wav_16_bit_stereo(tmp_path):
    path = tmp_path / "stereo.wav"
    samples = np.stack([np.linspace(-1, 1, 101), np.zeros(101)], axis=1)
    write_wav(path, samples, 48000, bits=16)
    rate, data = scipy.io.wavfile.read(path)
    assert rate == 48000 and data.dtype == np.int16 and data.shape == (101, 2)
    assert data[0, 0] == -32768 and data[-1, 0] == 32767 and not data[:, 1].any()


def test_write_wav_round_trips_a_clip_to_24_bit_precision(tmp_path):
    signal = 0.3 * np.sin(2 * np.pi * 441 * np.arange(44100) / 44100)
    write_wav(tmp_path / "tone.wav", signal, 44100)
    _, data = scipy.io.wavfile.read(tmp_path / "tone.wav")
    assert np.max(np.abs(data / 2.0**31 - signal)) <= 2.0**-24
    assert [name for name in os.listdir(tmp_path)] == ["tone.wav"]  # no temporary left


@pytest.mark.parametrize(
    "data, kwargs, error, match",
    [
        (np.zeros(4), {"bits": 8}, ValueError, "bits must be 16, 24 or 32"),
        (np.zeros(4), {"sampling_rate": 0}, ValueError, "sampling_rate must be a positive"),
        (np.array([0.0, np.nan]), {}, ValueError, "NaN"),
        (np.array([2**23], dtype=np.int64), {}, ValueError, r"\[-8388608, 8388607\]"),
        (np.zeros((2, 2, 2)), {}, ValueError, "num_samples"),
        (np.array(["a"]), {}, TypeError, "float or integer"),
    ],
)
def test_write_wav_rejects_bad_input(tmp_path, data, kwargs, error, match):
    arguments = {"sampling_rate": 44100, **kwargs}
    with pytest.raises(error, match=match):
        write_wav(tmp_path / "bad.wav", data, **arguments)
    assert not os.listdir(tmp_path)


# ----------------------------------------------------------------------------- the dataset


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_synthetic_tau22(tmp_path_factory.mktemp("synth") / "tau22", seed=0, **SMALL)


def _digests(root):
    digests = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            digests[os.path.relpath(path, root)] = hashlib.sha256(
                open(path, "rb").read()
            ).hexdigest()
    return digests


def test_layout_matches_tau22(synth):
    for relative in (
        "meta.csv",
        "evaluation_setup/fold1_train.csv",
        "evaluation_setup/fold1_evaluate.csv",
        "evaluation_setup/fold1_test.csv",
        "split5.csv",
        "split10.csv",
        "split25.csv",
        "split50.csv",
        "split100.csv",
        "test.csv",
        MARKER_FILE,
    ):
        assert os.path.isfile(os.path.join(synth, relative)), relative
    with open(os.path.join(synth, "evaluation_setup", "fold1_test.csv")) as handle:
        lines = handle.read().splitlines()
    assert lines[0] == "filename" and len(lines) == 91
    meta = tau22.read_meta(synth)
    assert len(meta) == 290 == len(os.listdir(os.path.join(synth, "audio")))


def test_every_clip_is_one_second_of_24_bit_mono_44k(synth):
    for name in sorted(os.listdir(os.path.join(synth, "audio"))):
        tau22.parse_filename(f"audio/{name}")
        with wave.open(os.path.join(synth, "audio", name)) as reader:
            assert reader.getparams()[:4] == (1, 3, 44100, 44100), name


def test_splits_are_nested_disjoint_and_device_structured(synth):
    splits = {split: tau22.load_split(synth, split) for split in (5, 10, 25, 50, 100, "test")}
    sizes = {split: len(clips) for split, clips in splits.items()}
    assert sizes == {5: 10, 10: 20, 25: 50, 50: 100, 100: 200, "test": 90}
    names = {split: {clip.filename for clip in clips} for split, clips in splits.items()}
    assert names[5] < names[10] < names[25] < names[50] < names[100]
    assert not names[100] & names["test"]
    for clips in splits.values():
        assert set(tau22.split_summary(clips)["scenes"].values()) == {len(clips) // 10}

    train = tau22.split_summary(splits[100])
    assert train["devices"] == {
        "a": 150, "b": 10, "c": 10, "s1": 10, "s2": 10, "s3": 10, "s4": 0, "s5": 0, "s6": 0,
    }  # fmt: skip
    test = tau22.split_summary(splits["test"])
    assert set(test["devices"].values()) == {10}
    assert test["device_groups"] == {"real": 30, "seen": 30, "unseen": 30}
    # training and test recordings come from different locations, in shared cities
    assert not {c.location for c in splits[100]} & {c.location for c in splits["test"]}
    # b, c and s1-s3 training clips are parallel versions of device-a recordings
    a_sources = {c.filename.rsplit("-", 1)[0] for c in splits[100] if c.device == "a"}
    assert all(c.filename.rsplit("-", 1)[0] in a_sources for c in splits[100])
    # the same split through the evaluation_setup originals
    assert names[100] == {
        c.filename
        for c in tau22.load_split(synth, 100, splits_dir=os.path.join(synth, "evaluation_setup"))
    }


def test_same_seed_same_bytes_and_safe_replacement(synth, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="Refusing to overwrite"):
        make_synthetic_tau22(foreign, **SMALL)
    assert os.listdir(foreign) == ["notes.txt"]

    target = tmp_path / "again"
    target.mkdir()  # an empty folder is fine
    first = _digests(make_synthetic_tau22(target, seed=0, **SMALL))
    assert first == _digests(synth)  # same arguments, same bytes

    (target / "audio" / "stale.wav").write_bytes(b"")
    make_synthetic_tau22(target, seed=1, **SMALL)  # our own earlier output: replaced whole
    second = _digests(target)
    assert "audio/stale.wav" not in second

    def audio(digests):
        return {digest for name, digest in digests.items() if name.startswith("audio")}

    assert len(audio(first)) == 290 and not audio(first) & audio(second)
    assert first["split5.csv"] != second["split5.csv"]
    assert sorted(os.listdir(tmp_path)) == ["again", "mine"]  # no staging folders left


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(clips_per_class=19), "clips_per_class must be an int >= 20"),
        (dict(test_clips_per_class=10), "multiple of 9"),
        (dict(test_clips_per_class=0), "multiple of 9"),
        (dict(seed=-1), "seed must be a non-negative int"),
    ],
)
def test_rejects_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_synthetic_tau22(tmp_path / "x", **{**SMALL, **kwargs})
    assert not (tmp_path / "x").exists()


# ----------------------------------------------------------------------------- the signals


def _band_energies(path, edges):
    _, data = scipy.io.wavfile.read(path)
    spectrum = np.abs(np.fft.rfft(data / 2.0**31)) ** 2
    freqs = np.fft.rfftfreq(data.shape[0], 1 / 44100)
    return np.array(
        [
            np.log(spectrum[(freqs >= lo) & (freqs < hi)].sum() + 1e-9)
            for lo, hi in zip(edges[:-1], edges[1:], strict=True)
        ]
    )


@pytest.fixture(scope="module")
def features(synth):
    edges = np.geomspace(30, 20000, 33)
    out = {}
    for split in (100, "test"):
        clips = tau22.load_split(synth, split)
        out[split] = (
            np.stack([_band_energies(os.path.join(synth, c.filename), edges) for c in clips]),
            np.array([c.label for c in clips]),
            clips,
        )
    return out, edges


def test_scenes_are_learnable_but_not_trivial(features):
    """A nearest-centroid classifier on 32 log band energies, fit on split100 (200 clips):
    well above the 10 % chance level on the unseen test locations, short of perfect."""
    (train_x, train_y, _), (test_x, test_y, test_clips) = features[0][100], features[0]["test"]
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    centroids = np.stack([((train_x - mean) / std)[train_y == k].mean(0) for k in range(10)])
    distances = (((test_x - mean) / std)[:, None, :] - centroids[None]) ** 2
    predicted = distances.sum(-1).argmin(1)
    accuracy = (predicted == test_y).mean()
    assert 0.35 < accuracy < 0.95, accuracy
    real = np.array([c.device_group == "real" for c in test_clips])
    assert (predicted[real] == test_y[real]).mean() > 0.45


def test_scene_signatures(features):
    (train_x, train_y, _), edges = features[0][100], features[1]
    centres = np.sqrt(edges[:-1] * edges[1:])
    power = np.exp(train_x)
    centroid = (power * centres).sum(1) / power.sum(1)
    by_scene = {
        label: np.median(centroid[train_y == k]) for k, label in enumerate(tau22.SCENE_LABELS)
    }
    # engine rumble below a few hundred Hz versus birdsong at several kHz
    assert by_scene["bus"] < 400 < 1500 < by_scene["park"]
    assert by_scene["street_traffic"] < by_scene["public_square"]


def test_devices_colour_the_same_recording_differently(features):
    """Test recordings are heard through (a, s1, s4), (b, s2, s5) or (c, s3, s6). Relative to
    device a, the unseen s4 bends the spectral shape (100 Hz - 4 kHz) twice as much as the seen
    s1, and a classifier fit on training devices does worse on the unseen ones."""
    (test_x, test_y, clips), edges = features[0]["test"], features[1]
    by_source = collections.defaultdict(dict)
    for row, clip in enumerate(clips):
        by_source[clip.filename.rsplit("-", 1)[0]][clip.device] = test_x[row]
    triples = [devices for devices in by_source.values() if "a" in devices]
    assert len(triples) == 10 and all(set(t) == {"a", "s1", "s4"} for t in triples)
    centres = np.sqrt(edges[:-1] * edges[1:])
    mid = (centres > 100) & (centres < 4000)

    def shape(x):
        return x[mid] - x[mid].mean()  # gain removed

    seen = np.mean([np.abs(shape(t["s1"]) - shape(t["a"])).mean() for t in triples])
    unseen = np.mean([np.abs(shape(t["s4"]) - shape(t["a"])).mean() for t in triples])
    assert unseen > 2.0 * seen > 0.4  # nats per band; measured 1.47 and 0.64

    (train_x, train_y, _) = features[0][100]
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    centroids = np.stack([((train_x - mean) / std)[train_y == k].mean(0) for k in range(10)])
    predicted = ((((test_x - mean) / std)[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)
    correct = predicted == test_y
    groups = np.array([clip.device_group for clip in clips])
    assert correct[groups == "unseen"].mean() < correct[groups == "real"].mean() - 0.15
