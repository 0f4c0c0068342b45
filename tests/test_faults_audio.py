"""Faults in audio and dataset files, driven through the CLI as a user meets them.

Bad audio (non-finite samples, absurd headers, corrupt clips) and bad split/meta rows must be
one line that names the file, in every command; ``--on-error skip`` must work the same on
``train``, ``evaluate`` and ``prepare``; a NaN loss stops training; ``predict --json`` stays
JSON. The last test feeds random and mutated WAV bytes to the reader (Hypothesis).
"""

import io
import json
import shutil
import struct
import tracemalloc

import numpy as np
import pytest
import soundfile
from helpers import TinyMofle

import keras_asc
from keras_asc import plugins
from keras_asc.cli import main
from keras_asc.data.audio import AudioDecodeError, load_audio


@pytest.fixture(scope="module")
def tiny_model():
    name = plugins.register_plugin(TinyMofle("faults_tiny"), name="faults-tiny-plugin")
    yield "faults_tiny"
    plugins.unregister_plugin(name)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from keras_asc.data.synthetic import make_synthetic_tau22

    root = tmp_path_factory.mktemp("tau22") / "synth"
    return make_synthetic_tau22(str(root), clips_per_class=20, test_clips_per_class=9)


@pytest.fixture
def data(synthetic, tmp_path):
    """A private copy of the synthetic dataset, free to corrupt."""
    return shutil.copytree(synthetic, tmp_path / "data")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model):
    folder = tmp_path_factory.mktemp("run")
    keras_asc.build(tiny_model).save(folder / "model.keras")
    (folder / "run_config.json").write_text(json.dumps({"model": tiny_model}))
    return folder


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_lines(err):
    return [line for line in err.splitlines() if "error:" in line]


def split_rows(data, split):
    lines = (data / f"{split}.csv").read_text().splitlines()[1:]
    return [line.split("\t")[0] for line in lines if line]


# --- bad WAV files -----------------------------------------------------------------------


def _valid_wav(frames=1600, rate=16000, subtype="PCM_16"):
    buffer = io.BytesIO()
    signal = 0.1 * np.sin(np.arange(frames) / 7.0).astype(np.float32)
    soundfile.write(buffer, signal, rate, format="WAV", subtype=subtype)
    return bytearray(buffer.getvalue())


def _non_finite_wav(value=np.nan):
    buffer = io.BytesIO()
    signal = np.zeros(1600, np.float32)
    signal[100] = value
    soundfile.write(buffer, signal, 16000, format="WAV", subtype="FLOAT")
    return bytes(buffer.getvalue())


def _with_field(fmt, offset, value):
    wav = _valid_wav()
    wav[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
    return bytes(wav)


BAD_WAVS = {
    "nan": (_non_finite_wav(np.nan), "non-finite sample"),
    "inf": (_non_finite_wav(np.inf), "non-finite sample"),
    "rate_tiny": (_with_field("<I", 24, 1), "sampling rate of 1 Hz"),
    "rate_coprime": (_with_field("<I", 24, 700001), "taps"),
    "rate_huge": (
        _with_field("<I", 24, 4_000_000_000),
        "its header declares a sampling rate of 4000000000 Hz; expected 1000 to 768000 Hz",
    ),
    "channels": (_with_field("<H", 22, 5000), "its header declares 5000 channels; expected 1 to 64"),
    "data_size": (_with_field("<I", 40, 0x7FFFFFF0), "truncated"),
}


@pytest.mark.parametrize("kind", sorted(BAD_WAVS))
def test_the_reader_refuses_bad_audio_in_one_line(tmp_path, kind):
    content, reason = BAD_WAVS[kind]
    path = tmp_path / f"{kind}.wav"
    path.write_bytes(content)
    # A coprime rate needs a huge FIR filter (polyphase, sinc_hann); soxr, the default, takes
    # any ratio in bounded memory and reads that file.
    resampler = "polyphase" if kind == "rate_coprime" else "soxr_hq"
    with pytest.raises(AudioDecodeError) as caught:
        load_audio(path, resampler=resampler)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message and reason in message


def test_predict_names_every_bad_file_and_json_stays_valid(capsys, run_dir, tmp_path):
    good = tmp_path / "good.wav"
    good.write_bytes(bytes(_valid_wav(frames=32000)))
    bad = []
    for kind, (content, _) in sorted(BAD_WAVS.items()):
        if kind == "rate_coprime":
            continue  # the model resamples with soxr, which reads it (see above)
        bad.append(tmp_path / f"{kind}.wav")
        bad[-1].write_bytes(content)
    code, out, err = cli(capsys, "predict", run_dir, good, *bad)
    assert code == 1
    lines = error_lines(err)
    assert len(lines) == len(bad)
    for path, line in zip(bad, lines, strict=True):
        assert str(path) in line
    assert "Traceback" not in err

    code, out, err = cli(capsys, "predict", run_dir, good, *bad, "--json")
    assert code == 1
    entries = json.loads(out)
    assert [entry["path"] for entry in entries] == [str(good)] + [str(p) for p in bad]
    assert entries[0]["error"] is None and entries[0]["top"]
    assert all(entry["error"] and entry["path"] in entry["error"] for entry in entries[1:])


def test_predict_json_is_json_when_the_model_is_missing(capsys, tmp_path):
    code, out, err = cli(capsys, "predict", tmp_path / "nothing", tmp_path / "a.wav", "--json")
    assert code == 2
    assert "error" in json.loads(out)
    assert len(error_lines(err)) == 1


# --- prepare, train, evaluate and DIR with bad clips --------------------------------------


def _corrupt(data, split, count, content=None):
    """Overwrite the first ``count`` clips of ``split`` with non-finite audio; their names."""
    names = split_rows(data, split)[:count]
    for name in names:
        (data / name).write_bytes(content or _non_finite_wav())
    return names


def test_prepare_stops_on_a_bad_clip_or_skips_it_and_says_which(capsys, data, tmp_path):
    (name,) = _corrupt(data, "split5", 1)
    code, out, err = cli(capsys, "prepare", "--data", data, "--split", "5", "--cache",
                         tmp_path / "cache", "--workers", "1")
    assert code == 2
    assert error_lines(err) == [line for line in err.splitlines() if line.strip()]
    assert name in err and "non-finite" in err

    code, out, err = cli(capsys, "prepare", "--data", data, "--split", "5", "--cache",
                         tmp_path / "cache", "--workers", "1", "--on-error", "skip")
    assert code == 0
    assert "1 of 10 clips could not be read" in out and name in out


def test_evaluate_without_cache_stops_on_a_bad_clip_or_skips_it(capsys, data, run_dir, tmp_path):
    (name,) = _corrupt(data, "test", 1)
    code, out, err = cli(capsys, "evaluate", run_dir, "--data", data, "--out", tmp_path / "e",
                         "--no-plots")
    assert code == 2
    (line,) = error_lines(err)
    assert name in line and "non-finite" in line and "Traceback" not in err

    code, out, err = cli(capsys, "evaluate", run_dir, "--data", data, "--out", tmp_path / "e",
                         "--no-plots", "--on-error", "skip")
    assert code == 0
    assert "Skipped 1 of 90 clips" in out and name in out
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["num_clips"] == 89


def _train(capsys, data, model, out, *extra):
    return cli(capsys, "train", "--model", model, "--split", "5", "--data", data, "--out", out,
               "--epochs", "1", "--batch-size", "4", "--no-jit", "--verbose", "0", *extra)


def test_train_without_cache_stops_on_a_corrupt_clip(capsys, data, tiny_model, tmp_path):
    # Every clip is bad, so the first batch meets one whatever the shuffle.
    names = _corrupt(data, "split5", 10, content=b"RIFF\x24\x00\x00\x00WAVEfmt ")
    code, out, err = _train(capsys, data, tiny_model, tmp_path / "run")
    assert code == 2
    (line,) = error_lines(err)
    assert any(name in line for name in names) and "Traceback" not in err
    assert not (tmp_path / "run" / "model.keras").exists()


@pytest.mark.slow
def test_train_skips_a_bad_clip_and_says_which(capsys, data, tiny_model, tmp_path):
    (name,) = _corrupt(data, "split5", 1)
    # --epochs 2 (the later flag wins): a dropped clip must not end the run after one epoch.
    code, out, err = _train(capsys, data, tiny_model, tmp_path / "run", "--on-error", "skip", "--epochs", "2")
    assert code == 0, err
    assert "Skipped 1 of 10 clips" in out and name in out
    assert "model saved" in out
    with open(tmp_path / "run" / "log.csv", encoding="utf-8") as handle:
        assert [line.split(",")[0] for line in handle.read().splitlines()[1:]] == ["0", "1"]


@pytest.mark.slow
def test_audio_far_beyond_full_scale_is_refused_before_training(capsys, data, tiny_model, tmp_path):
    # Finite samples of 3e38 overflow the front-end's float32 power to Inf (a NaN loss at the
    # first step, before decoding checked the peak): now the file is refused at decoding.
    buffer = io.BytesIO()
    soundfile.write(buffer, np.full(32000, 3e38, np.float32), 32000, format="WAV", subtype="FLOAT")
    _corrupt(data, "split5", 10, content=buffer.getvalue())
    code, out, err = _train(capsys, data, tiny_model, tmp_path / "run")
    assert code == 2, out + err
    (line,) = error_lines(err)
    assert "its peak sample magnitude is 3e+38" in line and "expected samples within +-16" in line
    assert "model saved" not in out
    assert not (tmp_path / "run" / "model.keras").exists()


def test_a_bad_impulse_response_is_named(capsys, data, tiny_model, tmp_path):
    dirs = tmp_path / "dirs"
    dirs.mkdir()
    (dirs / "ir0.wav").write_bytes(bytes(_valid_wav()))
    (dirs / "ir1.wav").write_bytes(_non_finite_wav(np.inf))
    code, out, err = _train(capsys, data, tiny_model, tmp_path / "run", "--dirs", dirs)
    assert code == 2
    (line,) = error_lines(err)
    assert str(dirs / "ir1.wav") in line and "non-finite" in line


# --- split and meta files -----------------------------------------------------------------


def _replace_row(path, row_index, text):
    lines = path.read_bytes().split(b"\n")
    lines[row_index] = text
    path.write_bytes(b"\n".join(lines))


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (b"../outside/airport-lisbon-1000-40000-0-a.wav\tairport", "points outside"),
        (b"/etc/airport-lisbon-1000-40000-0-a.wav\tairport", "points outside"),
        (b"audio/..\\..\\airport-lisbon-1000-40000-0-a.wav\tairport", "points outside"),
        (b"audio/airport-lisbon-1000-40000-0-\xff.wav\tairport", "not UTF-8"),
        (b"audio/" + b"x" * 5000 + b".wav\tairport", "characters long"),
        (b"audio/a.wav\t\"airport\x00\tx", "malformed row"),
        (b"audio/a.wav", "expected 'filename<TAB>scene_label'"),
    ],
)
def test_bad_split_rows_name_the_file_and_line(capsys, data, tmp_path, row, expected):
    _replace_row(data / "split5.csv", 3, row)
    code, out, err = cli(capsys, "prepare", "--data", data, "--split", "5", "--cache",
                         tmp_path / "cache")
    assert code == 2
    (line,) = error_lines(err)
    assert f"split5.csv, line 4: {expected}" in line or (
        "split5.csv, line 4:" in line and expected in line
    )


def test_bad_meta_rows_name_the_file_and_line(data):
    from keras_asc.data.tau22 import read_meta

    lines = (data / "meta.csv").read_text().splitlines()
    fields = lines[2].split("\t")
    lines[2] = "\t".join(["../" + fields[0]] + fields[1:])
    (data / "meta.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"meta\.csv, line 3: file name '\.\./.*points outside"):
        read_meta(data)


# --- random and mutated WAV bytes (Hypothesis) ---------------------------------------------

hypothesis = pytest.importorskip("hypothesis")
strategies = hypothesis.strategies

_SEED_WAVS = [
    bytes(_valid_wav()),
    bytes(_valid_wav(frames=400, rate=44100, subtype="PCM_24")),
    bytes(_valid_wav(frames=300, rate=8000, subtype="FLOAT")),
]
# The most any decode of these tiny files may allocate (numpy arrays are traced): a header
# that declares gigabytes must be refused, not read.
_MAX_PEAK_BYTES = 64 * 2**20


@strategies.composite
def wav_bytes(draw):
    if draw(strategies.booleans()):
        return draw(strategies.binary(max_size=200))
    data = bytearray(draw(strategies.sampled_from(_SEED_WAVS)))
    for _ in range(draw(strategies.integers(1, 6))):
        # Headers are where the sizes live: aim most mutations at the first 64 bytes.
        end = 64 if draw(strategies.booleans()) else len(data)
        offset = draw(strategies.integers(0, end - 4))
        mutation = draw(strategies.sampled_from(["byte", "u32", "u16", "cut"]))
        if mutation == "byte":
            data[offset] = draw(strategies.integers(0, 255))
        elif mutation == "u32":
            data[offset : offset + 4] = struct.pack("<I", draw(strategies.integers(0, 2**32 - 1)))
        elif mutation == "u16":
            data[offset : offset + 2] = struct.pack("<H", draw(strategies.integers(0, 2**16 - 1)))
        else:
            del data[offset:]
            break
    return bytes(data)


@hypothesis.settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture],
)
@hypothesis.given(content=wav_bytes())
def test_random_and_mutated_wavs_decode_or_fail_in_one_line(tmp_path, content):
    path = tmp_path / "fuzz.wav"
    path.write_bytes(content)
    tracemalloc.start()
    try:
        waveform = load_audio(path)
    except AudioDecodeError as error:
        assert "\n" not in str(error) and str(path) in str(error)
    else:
        assert waveform.dtype == np.float32 and waveform.ndim == 1
        assert np.isfinite(waveform).all()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < _MAX_PEAK_BYTES, f"decoding {len(content)} bytes allocated {peak} bytes"
