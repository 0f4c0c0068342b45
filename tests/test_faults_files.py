"""Faults in the files a user hands keras-asc, driven through the command line: downloads and
archives, damaged model files and sidecars, broken plugins. Each must end in a one-line error
that names the file (or plugin and hook), leave nothing half-written under a final name, and
never crash the process."""

import http.server
import io
import json
import os
import subprocess
import sys
import textwrap
import threading
import warnings
import zipfile

import numpy as np
import pytest

from keras_asc.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _one_error_line(text, *fragments):
    # Lines from keras-asc only (TensorFlow's start-up log is someone else's fault).
    lines = [line for line in text.splitlines() if line.startswith("keras-asc") and "error" in line]
    assert len(lines) == 1, text
    assert "Traceback" not in text, text
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# ============================================================================ 7. downloads


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files``; ``server.no_length`` omits Content-Length, ``server.cut`` sends
    only the first bytes of a body while declaring all of it."""

    protocol_version = "HTTP/1.0"

    def log_message(self, *args):
        pass

    def do_GET(self):
        server = self.server
        path = self.path.split("?", 1)[0]
        body = server.files.get(path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        range_header = self.headers.get("Range")
        if range_header:
            start = int(range_header.split("=", 1)[1].split("-", 1)[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        if path not in server.no_length:
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload[: server.cut.get(path, len(payload))])


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.no_length, httpd.cut = {}, set(), {}
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _download(tmp_path, server, entries, only):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps(entries))
    return main(
        ["download", "tau22", str(tmp_path / "data"), "--manifest", str(manifest),
         "--only", only, "--retries", "1", "--quiet"]
    )


def _split_entry(server, name="split5.csv", **extra):
    return {"name": name, "url": f"{server.base}/{name}", "group": "splits",
            "target": f"splits/{name}", **extra}


def _zip(members, compression=zipfile.ZIP_STORED):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_no_content_length_and_no_checksum_is_never_promoted(server, tmp_path, capsys):
    server.files["/split5.csv"] = b"filename\n" + b"a.wav\n" * 10
    server.no_length.add("/split5.csv")
    assert _download(tmp_path, server, [_split_entry(server)], "splits") == 1
    _one_error_line(capsys.readouterr().err, "split5.csv", "no Content-Length", "no checksum")
    assert not (tmp_path / "data" / "splits" / "split5.csv").exists()
    assert not (tmp_path / "data" / "downloads" / "split5.csv").exists()


def test_a_cut_transfer_never_lands_under_its_final_name(server, tmp_path, capsys):
    body = _zip({"dirs/a.wav": b"x" * 5000})
    server.files["/dirs.zip"] = body
    server.cut["/dirs.zip"] = 100  # declares the whole body, sends 100 bytes, every time
    entry = {"name": "dirs.zip", "url": f"{server.base}/dirs.zip", "group": "dirs",
             "extract_to": "micirp_dirs", "strip_prefix": "dirs/"}
    assert _download(tmp_path, server, [entry], "dirs") == 1
    _one_error_line(capsys.readouterr().err, "dirs.zip", "giving up")
    downloads = tmp_path / "data" / "downloads"
    assert not (downloads / "dirs.zip").exists() and (downloads / "dirs.zip.part").exists()
    assert not (tmp_path / "data" / "micirp_dirs").exists()


def test_416_on_resume_does_not_promote_a_partial_of_the_wrong_size(server, tmp_path, capsys):
    body = b"filename\n" + b"a.wav\n" * 5
    server.files["/split5.csv"] = body
    downloads = tmp_path / "data" / "downloads"
    downloads.mkdir(parents=True)
    # A stale partial longer than the file now served: the Range request gets a 416.
    (downloads / "split5.csv.part").write_bytes(b"stale bytes " * 20)
    assert _download(tmp_path, server, [_split_entry(server, expected_rows=5)], "splits") == 0
    assert (tmp_path / "data" / "splits" / "split5.csv").read_bytes() == body


def test_crc_error_is_named_and_leaves_no_partial_extraction(server, tmp_path, capsys):
    good = _zip({"dirs/a.wav": b"A" * 4000, "dirs/b.wav": b"B" * 4000})
    damaged = bytearray(good)
    damaged[damaged.index(b"B" * 100) + 50] ^= 0xFF  # b.wav's data no longer matches its CRC
    server.files["/dirs.zip"] = bytes(damaged)
    entry = {"name": "dirs.zip", "url": f"{server.base}/dirs.zip", "group": "dirs",
             "extract_to": "micirp_dirs", "strip_prefix": "dirs/"}
    assert _download(tmp_path, server, [entry], "dirs") == 1
    _one_error_line(capsys.readouterr().err, "dirs.zip", "corrupt", "CRC")
    target = tmp_path / "data" / "micirp_dirs"
    assert not target.exists() or os.listdir(target) == []  # not even a.wav
    assert not (tmp_path / "data" / "downloads" / "dirs.zip").exists()


def _dirs_entry(server):
    return {"name": "dirs.zip", "url": f"{server.base}/dirs.zip", "group": "dirs",
            "extract_to": "micirp_dirs", "strip_prefix": "dirs/"}


def test_a_zip_bomb_is_refused_from_its_declared_sizes_before_anything_is_written(
    server, tmp_path, capsys
):
    # 300 MB of zeros deflate to about 300 kB: a thousand times the download.
    bomb = _zip({f"dirs/zeros{i}.wav": bytes(100_000_000) for i in range(3)}, zipfile.ZIP_DEFLATED)
    assert len(bomb) < 400_000
    server.files["/dirs.zip"] = bomb
    assert _download(tmp_path, server, [_dirs_entry(server)], "dirs") == 2
    archive = tmp_path / "data" / "downloads" / "dirs.zip"
    line = _one_error_line(capsys.readouterr().err)
    assert line == (
        f"keras-asc download: error: {archive}: its members would unpack to 300.0 MB from "
        f"{len(bomb) / 1e6:.1f} MB; expected at most 100 times the archive's size (a zip bomb "
        "or a damaged archive; nothing was written)."
    )
    target = tmp_path / "data" / "micirp_dirs"
    assert not target.exists() or os.listdir(target) == []


def test_an_archive_that_expands_within_budget_is_extracted(server, tmp_path):
    text = b"filename,scene\n" + b"audio/a.wav,park\n" * 5000  # text: ~40x smaller deflated
    server.files["/dirs.zip"] = _zip({"dirs/meta.csv": text}, zipfile.ZIP_DEFLATED)
    assert _download(tmp_path, server, [_dirs_entry(server)], "dirs") == 0
    assert (tmp_path / "data" / "micirp_dirs" / "meta.csv").read_bytes() == text


@pytest.mark.parametrize(
    "members, problem",
    [
        ([("dirs/a.wav", b"1"), ("dirs/a.wav", b"2")], "two members are named 'a.wav'"),
        ([("dirs/a.wav", b"1"), ("dirs/./a.wav", b"2")], "two members are named 'a.wav'"),
        ([("dirs/x", b"1"), ("dirs/x/b.wav", b"2")], "'x' is both a file and a folder in the archive"),
    ],
    ids=["same-name", "same-path", "file-and-folder"],
)
def test_duplicate_members_are_refused_before_anything_is_written(
    server, tmp_path, capsys, members, problem
):
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w") as archive:
        warnings.simplefilter("ignore")  # zipfile's "Duplicate name" warning
        for name, data in members:
            archive.writestr(name, data)
    server.files["/dirs.zip"] = buffer.getvalue()
    assert _download(tmp_path, server, [_dirs_entry(server)], "dirs") == 2
    archive = tmp_path / "data" / "downloads" / "dirs.zip"
    assert _one_error_line(capsys.readouterr().err) == (
        f"keras-asc download: error: {archive}: {problem}; expected each path once (refusing "
        "to extract, nothing was written)."
    )
    target = tmp_path / "data" / "micirp_dirs"
    assert not target.exists() or os.listdir(target) == []


@pytest.mark.parametrize(
    "field, value",
    [("target", "../outside.csv"), ("target", "/tmp/outside.csv"), ("extract_to", "../up"),
     ("extract_to", "/abs")],
)
def test_manifest_paths_outside_the_data_folder_are_refused(
    server, tmp_path, capsys, field, value
):
    entry = _split_entry(server) if field == "target" else {
        "name": "d.zip", "url": f"{server.base}/d.zip", "group": "dirs"}
    entry[field] = value
    # A manifest that points outside the data folder is bad input: exit 2 (see keras_asc.cli).
    assert _download(tmp_path, server, [entry], entry["group"]) == 2
    _one_error_line(capsys.readouterr().err, field, repr(value))
    assert not (tmp_path / "outside.csv").exists() and not (tmp_path / "up").exists()


def test_a_link_inside_the_data_folder_cannot_carry_a_target_outside(server, tmp_path, capsys):
    server.files["/split5.csv"] = b"filename\n" + b"a.wav\n" * 5
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (tmp_path / "data").mkdir()
    os.symlink(outside, tmp_path / "data" / "splits")
    assert _download(tmp_path, server, [_split_entry(server)], "splits") == 2
    _one_error_line(capsys.readouterr().err, "split5.csv", "outside the data folder")
    assert os.listdir(outside) == []


# ============================================================================ 8. model files


def _wav(tmp_path):
    from keras_asc.data.synthetic import write_wav

    path = tmp_path / "clip.wav"
    write_wav(str(path), np.zeros(32000, "float32"), 32000)
    return str(path)


@pytest.mark.parametrize(
    "content",
    [b"", b"not a zip at all", b"PK\x03\x04" + b"\0" * 40],
    ids=["empty", "text", "truncated-zip"],
)
def test_damaged_keras_file_is_one_line_naming_it(tmp_path, capsys, content):
    model = tmp_path / "model.keras"
    model.write_bytes(content)
    assert main(["predict", str(model), _wav(tmp_path)]) == 2
    _one_error_line(capsys.readouterr().err, str(model))


def test_keras_zip_without_a_model_inside_is_one_line(tmp_path, capsys):
    model = tmp_path / "model.keras"
    model.write_bytes(_zip({"config.json": b"{not json"}))
    assert main(["predict", str(model), _wav(tmp_path)]) == 2
    _one_error_line(capsys.readouterr().err, str(model), "cannot load")


def test_damaged_run_config_names_the_file(tmp_path):
    from keras_asc.training.evaluation import read_run_config

    (tmp_path / "run_config.json").write_text('{"model": ')
    with pytest.raises(ValueError, match="run_config.json: not valid JSON"):
        read_run_config(tmp_path)


@pytest.fixture(scope="module")
def tiny_tflite(tmp_path_factory):
    """A small valid .tflite with the sidecars an export writes beside it."""
    import tensorflow as tf

    from keras_asc.layers import LogMelSpectrogram
    from keras_asc.quantization.export import EXPORT_FORMAT
    from keras_asc.quantization.frontend import frontend_params, save_frontend_params

    folder = tmp_path_factory.mktemp("tflite")

    @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 1], tf.float32)])
    def model(x):
        return tf.reduce_mean(tf.nn.conv2d(x, tf.ones([3, 3, 1, 2]), 1, "SAME"), axis=[1, 2])

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [model.get_concrete_function()], model
    )
    (folder / "tiny.tflite").write_bytes(converter.convert())
    save_frontend_params(str(folder / "tiny.frontend.npz"), [frontend_params(LogMelSpectrogram())])
    (folder / "tiny.json").write_text(json.dumps(
        {"format": EXPORT_FORMAT, "model": "tiny", "num_samples": 32000,
         "inputs": [{"name": "x", "model_input": 0}]}
    ))
    return folder


def _copy_model(source, target, **replace):
    target.mkdir()
    for name in ("tiny.tflite", "tiny.json", "tiny.frontend.npz"):
        data = replace.get(name.replace(".", "_"), (source / name).read_bytes())
        (target / name).write_bytes(data)
    return str(target / "tiny.tflite")


def test_tflite_checks_pass_on_a_good_file(tiny_tflite):
    from keras_asc.quantization import verify_tflite

    verify_tflite(tiny_tflite / "tiny.tflite")


@pytest.mark.parametrize(
    "damage, fragment",
    [
        ({"tiny_tflite": b"\0" * 64}, "tiny.tflite: not a TFLite model"),
        ({"tiny_json": b'{"format": '}, "tiny.json: not valid JSON"),
        ({"tiny_json": b"[]"}, "tiny.json: expected a JSON object"),
        ({"tiny_frontend_npz": b"garbage"}, "tiny.frontend.npz: unreadable"),
    ],
    ids=["identifier", "json", "json-list", "npz"],
)
def test_damaged_tflite_or_sidecar_is_one_line_naming_it(
    tiny_tflite, tmp_path, capsys, damage, fragment
):
    path = _copy_model(tiny_tflite, tmp_path / "m", **damage)
    assert main(["predict", path, _wav(tmp_path)]) == 2
    _one_error_line(capsys.readouterr().err, fragment)


def test_an_interpreter_crash_is_an_error_not_a_dead_process(tiny_tflite, monkeypatch):
    from keras_asc.quantization import interpreter

    # What a damaged flatbuffer can do to the interpreter: kill its process.
    monkeypatch.setattr(interpreter, "_PROBE", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    with pytest.raises(ValueError, match=r"tiny.tflite: the file is damaged: .*crashed \(SIGSEGV\)"):
        interpreter.verify_tflite(tiny_tflite / "tiny.tflite")


def test_mutated_tflite_files_never_crash_predict(tiny_tflite, tmp_path):
    good = (tiny_tflite / "tiny.tflite").read_bytes()
    rng = np.random.default_rng(0)
    paths = []
    for index in range(6):
        data = bytearray(good)
        if index % 2:
            data = data[: int(rng.integers(8, len(data)))]
        else:
            for position in rng.integers(8, len(data), 6):
                data[position] = int(rng.integers(256))
        paths.append(_copy_model(tiny_tflite, tmp_path / f"m{index}", tiny_tflite=bytes(data)))
    code = textwrap.dedent(f"""
        from keras_asc.cli import main
        for path in {paths!r}:
            print("rc", main(["predict", path, {_wav(tmp_path)!r}]), flush=True)
    """)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("rc ") == len(paths)
    assert "Traceback" not in result.stderr


# ============================================================================ 9. plugins

_PLUGIN_MODULES = {
    "fault_broken_import": "import no_such_module_anywhere\n",
    "fault_misspelt": textwrap.dedent("""
        import keras_asc

        @keras_asc.hookimpl
        def register_model(register):
            pass
    """),
    "fault_bad_signature": textwrap.dedent("""
        import keras_asc

        @keras_asc.hookimpl
        def register_models(register, extra):
            pass
    """),
    "fault_raises": textwrap.dedent("""
        import keras_asc

        @keras_asc.hookimpl
        def register_augmentations(register):
            raise RuntimeError("boom")
    """),
    "fault_impostor": textwrap.dedent("""
        import keras_asc

        @keras_asc.hookimpl
        def register_models(register):
            register("moflenet57", lambda **kw: None)
    """),
}


def _plugin_site(tmp_path, names):
    """A folder on sys.path holding plugin modules and a distribution declaring them."""
    site = tmp_path / "site"
    info = site / "fault_plugins-0.1.dist-info"
    info.mkdir(parents=True)
    for name in names:
        (site / f"{name}.py").write_text(_PLUGIN_MODULES[name])
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fault-plugins\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[keras_asc]\n" + "".join(f"{name} = {name}\n" for name in names)
    )
    return site


def _cli(site, *argv, **env):
    return subprocess.run(
        [sys.executable, "-m", "keras_asc", *argv], capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{site}",
             "TF_CPP_MIN_LOG_LEVEL": "3", **env},
    )


def test_broken_plugins_are_skipped_with_a_warning_naming_plugin_and_hook(tmp_path):
    names = ["fault_broken_import", "fault_misspelt", "fault_bad_signature", "fault_raises"]
    site = _plugin_site(tmp_path, names)
    result = _cli(site, "list", KERAS_ASC_PLUGINS=",".join(names + ["fault_no_such_plugin"]))
    assert "Traceback" not in result.stderr, result.stderr
    assert "moflenet57" in result.stdout and "freq_mixstyle" in result.stdout  # built-ins work
    warnings = [line for line in result.stderr.splitlines() if line.startswith("keras-asc:")]
    text = "\n".join(warnings)
    assert "'fault_broken_import'" in text and "ModuleNotFoundError" in text
    assert "'fault_misspelt'" in text and "'register_model' is not a keras-asc hook" in text
    assert "'fault_bad_signature'" in text and "'register_models' takes (register, extra)" in text
    assert "'fault_raises'" in text and "register_augmentations" in text and "boom" in text
    assert "KERAS_ASC_PLUGINS names 'fault_no_such_plugin'" in text
    assert result.returncode == 1  # `list` exits 1 when a plugin had problems


def test_a_name_conflict_is_reported_and_built_in_models_stay_usable(tmp_path):
    import keras_asc

    site = _plugin_site(tmp_path, ["fault_impostor"])
    result = _cli(site, "list", KERAS_ASC_PLUGINS="fault_impostor")
    assert result.returncode == 1, result.stderr  # `list` exits 1 when a plugin had problems
    assert "moflenet57" in result.stdout and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "keras-asc: warning: register_models: the name 'moflenet57' is registered by both "
        "plugin 'keras_asc.builtin' and plugin 'fault_impostor'; the built-in one is used. "
        "Uninstall the other or narrow loading with KERAS_ASC_PLUGINS."
    ]
    # Commands on a built-in model work, with the same one line on stderr.
    model = tmp_path / "moflenet57.keras"
    keras_asc.build("moflenet57").save(model)
    for argv, expected in [
        (("summary", "moflenet57"), "Total parameters: 60,440"),
        (("predict", str(model), _wav(tmp_path)), "1 window of 1 s"),
    ]:
        result = _cli(site, *argv, KERAS_ASC_PLUGINS="fault_impostor")
        assert result.returncode == 0, result.stderr
        assert expected in result.stdout
        assert len(result.stderr.splitlines()) <= 1 and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "hook_source, fragment",
    [
        ("def register_model(self, register): pass", "hook 'register_model' is not a keras-asc hook"),
        ("def register_models(self): pass", "hook 'register_models' takes (), expected (register)"),
    ],
    ids=["misspelt", "signature"],
)
def test_runtime_plugin_with_a_bad_hook_is_refused_in_one_line(hook_source, fragment):
    import pluggy

    import keras_asc
    from keras_asc import plugins

    namespace = {}
    exec(textwrap.dedent(hook_source), namespace)
    hook = keras_asc.hookimpl(namespace[hook_source.split()[1].split("(")[0]])
    bad = type("Bad", (), {hook.__name__: hook})()
    with pytest.raises(pluggy.PluginValidationError) as info:
        plugins.register_plugin(bad, name="bad-runtime")
    message = str(info.value)
    assert "\n" not in message and "plugin 'bad-runtime'" in message and fragment in message
    assert plugins.pm.get_plugin("bad-runtime") is None and "moflenet57" in keras_asc.list_models()
