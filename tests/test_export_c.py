"""``keras-asc export-c``: the model as a C array, the front-end constants and the C99 log-mel,
compiled with the system C compiler and checked against the NumPy reference."""

import json
import os
import re
import shutil

import numpy as np
import pytest
from conftest import SHARED_DATA

pytestmark = pytest.mark.skipif(
    not (shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")),
    reason="no C compiler (.ci/run installs build-essential)",
)


def _presets_params():
    import keras_asc
    from keras_asc.quantization.frontend import frontend_params

    return [frontend_params(keras_asc.build(name).frontend) for name in ("moflenet57", "cp_resnet59")]


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    """A tiny MofleNet, post-training quantised on noise and exported (files on disk)."""
    pytest.importorskip("tensorflow")
    import keras
    from helpers import TINY_MOFLE_CONFIG, randomize_state

    from keras_asc.models import AudioClassifier
    from keras_asc.quantization import export_int8, to_tf_keras

    keras.utils.set_random_seed(0)
    model = AudioClassifier.from_preset(
        "moflenet57", **TINY_MOFLE_CONFIG, frontend_config={"hop_length": 500}, name="tiny-c"
    )
    randomize_state(model, 0)
    waveforms = np.random.default_rng(0).normal(0, 0.1, (8, 32000)).astype("float32")
    folder = tmp_path_factory.mktemp("int8")
    return export_int8(to_tf_keras(model), [waveforms], folder / "tiny-c.tflite", max_calibration_samples=8)


@pytest.fixture(scope="module")
def v2_frontend(tmp_path_factory):
    """The C front-end of both v2 members' settings (MofleNet57 and CP-ResNet59), compiled.

    The int8 file itself is a placeholder here: the front-end sources depend only on the
    sidecars, which hold the presets' real constants."""
    from keras_asc.quantization.export_c import compile_frontend, export_c
    from keras_asc.quantization.frontend import save_frontend_params

    source = tmp_path_factory.mktemp("v2")
    (source / "v2.tflite").write_bytes(b"placeholder")
    params = _presets_params()
    save_frontend_params(str(source / "v2.frontend.npz"), params)
    description = {"model": "v2", "num_samples": 32000, "inputs": [{"name": "a"}, {"name": "b"}]}
    (source / "v2.json").write_text(json.dumps(description))
    out = tmp_path_factory.mktemp("c")
    export_c(source / "v2.tflite", out)
    return compile_frontend(str(out), "v2"), params


def _c_array(text, name):
    body = re.search(rf"{name}\[\] = \{{(.*?)\}};", text, re.S).group(1)
    return bytes(int(value, 16) for value in re.findall(r"0x([0-9a-f]{2})", body))


def test_cli_writes_the_model_array_and_the_arena(tiny_export, tmp_path, capsys):
    from keras_asc.cli import main

    out = tmp_path / "device"
    assert main(["export-c", tiny_export.path, str(out)]) == 0
    listed = capsys.readouterr().out.split()
    assert str(out / "tiny_c_model.c") in listed and str(out / "kasc_logmel.c") in listed
    source = (out / "tiny_c_model.c").read_text()
    assert _c_array(source, "tiny_c_model") == open(tiny_export.path, "rb").read()
    assert f"tiny_c_model_len = {os.path.getsize(tiny_export.path)}u;" in source
    assert "__attribute__((aligned(16)))" in source
    arena = json.loads(open(tiny_export.json_path).read())["tflite_micro"].get("arena_bytes")
    header = (out / "tiny_c_model.h").read_text()
    if arena:
        assert f"#define TINY_C_ARENA_BYTES {-(-arena // 16) * 16}\n" in header
    # A folder with no int8 file: one line naming it.
    assert main(["export-c", str(tmp_path / "empty"), str(out)]) == 2
    error = capsys.readouterr().err
    assert "empty" in error and len(error.strip().splitlines()) == 1


def test_exported_sources_compile_with_the_model(tiny_export, tmp_path):
    """Model and front-end sources compile together as one C99 program without warnings."""
    import subprocess

    from keras_asc.quantization.export_c import c_compiler, export_c

    out = tmp_path / "c"
    export_c(tiny_export.path, out)
    main = out / "main.c"
    main.write_text(
        '#include <stdio.h>\n#include <stdint.h>\n#include <stdlib.h>\n#include "tiny_c_model.h"\n'
        '#include "tiny_c_frontend.h"\n#include "kasc_rfft_reference.h"\n'
        "int main(void) {\n"
        "  const kasc_logmel_config *c = &tiny_c_frontend[0];\n"
        "  static float x[TINY_C_NUM_SAMPLES]; float *work = malloc(8 * c->fft_length);\n"
        "  float *out = malloc(4 * c->num_mel_bins * kasc_logmel_frames(c, TINY_C_NUM_SAMPLES));\n"
        "  kasc_rfft_reference *plan = kasc_rfft_reference_new(c->fft_length);\n"
        "  for (int i = 0; i < TINY_C_NUM_SAMPLES; ++i) x[i] = (i % 7) * 0.01f;\n"
        "  int status = kasc_logmel(c, x, TINY_C_NUM_SAMPLES, out, work, kasc_rfft_reference_run, plan);\n"
        '  printf("%d %u %d\\n", status, tiny_c_model_len, (int)((uintptr_t)tiny_c_model % 16));\n'
        "  return status;\n}\n"
    )
    program = tmp_path / "program"
    sources = [str(main), *(str(p) for p in out.glob("*.c") if p.name != "main.c")]
    compiled = subprocess.run(
        [c_compiler(), "-std=c99", "-Wall", "-Wextra", "-Werror", f"-I{out}", *sources, "-o",
         str(program), "-lm"],
        capture_output=True, text=True, check=False,
    )
    assert compiled.returncode == 0, compiled.stderr
    ran = subprocess.run([str(program)], capture_output=True, text=True, check=False)
    assert ran.returncode == 0
    status, length, misalignment = ran.stdout.split()
    assert (status, int(length), misalignment) == ("0", os.path.getsize(tiny_export.path), "0")


def _float64_logmel(clips, params):
    """The front-end's steps in float64 (NumPy's FFT): the exact values, to judge both."""
    x = clips.astype("float64")
    x = x[:, 1:] - params["pre_emphasis"] * x[:, :-1]
    half, hop = params["fft_length"] // 2, params["hop_length"]
    x = np.pad(x, ((0, 0), (half, half)), mode="reflect")
    count = 1 + (x.shape[1] - 2 * half) // hop
    frames = np.lib.stride_tricks.sliding_window_view(x, 2 * half, axis=1)[:, ::hop][:, :count]
    power = np.abs(np.fft.rfft(frames * params["window"].astype("float64"), axis=-1)) ** 2
    mel = power @ params["mel_filter_bank"].astype("float64")
    logmel = (np.log(mel + params["log_offset"]) + params["normalize_offset"]) / params["normalize_scale"]
    return logmel.transpose(0, 2, 1)[..., None]


def test_compiled_frontend_matches_numpy_on_synthetic_clips(v2_frontend):
    from keras_asc.quantization.frontend import frontend_numpy

    compiled, params = v2_frontend
    rng = np.random.default_rng(0)
    t = np.arange(32000) / 32000
    clips = np.stack(
        [
            rng.normal(0, 0.1, 32000),  # broadband
            rng.normal(0, 1e-5, 32000),  # near silence
            0.5 * np.sin(2 * np.pi * 440 * t),  # a tone
            np.clip(rng.normal(0, 1.0, 32000), -1, 1),  # loud, clipped
        ]
    ).astype("float32")
    for index, member in enumerate(params):
        expected = frontend_numpy(clips, member)
        got = compiled(clips, index)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="longer than fft_length"):
        compiled(np.zeros((1, 1000), "float32"), 0)


def test_compiled_frontend_on_a_chirp_is_closer_to_float64_than_numpy(v2_frontend):
    """A sweep leaves most bands ~100 dB under its peak, where float32 FFTs lose digits: the
    NumPy reference (scipy's float32 FFT) is 1.9e-4 off the float64 values there, the C
    front-end (float64 reference FFT) 3e-5."""
    from keras_asc.quantization.frontend import frontend_numpy

    compiled, params = v2_frontend
    t = np.arange(32000) / 32000
    chirp = (0.3 * np.sin(2 * np.pi * (100 + 6000 * t) * t)).astype("float32")[None]
    for index, member in enumerate(params):
        exact = _float64_logmel(chirp, member)
        c_error = np.abs(compiled(chirp, index) - exact).max()
        numpy_error = np.abs(frontend_numpy(chirp, member) - exact).max()
        assert c_error <= 1e-4 and c_error <= numpy_error


def test_compiled_frontend_matches_numpy_on_real_recordings(v2_frontend):
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real recordings not found at {SHARED_DATA}")
    import soundfile

    from keras_asc.quantization.frontend import frontend_numpy

    compiled, params = v2_frontend
    clips = []
    for name in ("metro_station-paris.wav", "acoustic_scene.wav"):
        audio, _ = soundfile.read(str(SHARED_DATA / "audio" / name), dtype="float32", always_2d=True)
        mono = audio.mean(axis=1)
        # Real recordings at 44.1 kHz, read as they are: the comparison needs real content.
        clips += [mono[start : start + 32000] for start in (0, 96000, 288000)]
    clips = np.stack(clips)
    for index, member in enumerate(params):
        np.testing.assert_allclose(compiled(clips, index), frontend_numpy(clips, member), atol=1e-4, rtol=0)
