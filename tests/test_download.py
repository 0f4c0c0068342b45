"""Downloads against a local HTTP server on 127.0.0.1 (no test touches the internet)."""

import dataclasses
import hashlib
import http.server
import io
import json
import os
import tarfile
import threading
import zipfile

import pytest

from keras_asc.cli import main as cli_main
from keras_asc.data import download
from keras_asc.data.download import RemoteFile

PREFIX = "TAU-urban-acoustic-scenes-2022-mobile-development/"


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files`` with single-range support and scripted failures."""

    def log_message(self, *args):  # keep the test output clean
        pass

    def do_GET(self):
        server = self.server
        path = self.path.split("?", 1)[0]
        range_header = self.headers.get("Range")
        server.requests.append((path, range_header))
        if path in server.fail_status and server.fail_status[path][1] > 0:
            status, remaining = server.fail_status[path]
            server.fail_status[path] = (status, remaining - 1)
            self.send_error(status)
            return
        if path not in server.files:
            self.send_error(404)
            return
        body = server.files[path]
        start = 0
        if range_header and server.ranges:
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
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        cut = server.truncate.pop(path, None)
        if cut is not None:
            # Promise the whole body, send part of it, hang up: an interrupted transfer.
            self.wfile.write(payload[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(payload)


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.requests = {}, []
    httpd.fail_status, httpd.truncate, httpd.ranges = {}, {}, True
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _zip(members):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _md5(data):
    return hashlib.md5(data).hexdigest()


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def _split_csv(rows):
    lines = ["filename\tscene_label"] + [
        f"audio/park-lyon-{i}-1-0-a.wav\tpark" for i in range(rows)
    ]
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def dataset(server):
    """Small archives in the TAU22 shapes, served at 127.0.0.1, and their manifest."""
    audio = {f"{PREFIX}audio/park-lyon-{i}-1-0-a.wav": os.urandom(3000 + i) for i in range(5)}
    meta = {
        f"{PREFIX}meta.csv": b"filename\tscene_label\tidentifier\tsource_label\n",
        f"{PREFIX}evaluation_setup/fold1_train.csv": b"filename\tscene_label\n",
    }
    dirs = {f"dirs/Mic_{i}.wav": os.urandom(500) for i in range(3)}
    blobs = {
        "/zenodo/meta.zip": _zip(meta),
        "/zenodo/audio.1.zip": _zip(audio),
        "/release/split5.csv": _split_csv(7),
        "/cpjku/dirs.zip": _zip(dirs),
    }
    server.files.update(blobs)
    manifest = (
        RemoteFile(
            name="meta.zip", url=server.base + "/zenodo/meta.zip?download=1", group="meta",
            md5=_md5(blobs["/zenodo/meta.zip"]), extract_to="", strip_prefix=PREFIX,
        ),
        RemoteFile(
            name="split5.csv", url=server.base + "/release/split5.csv", group="splits",
            target="splits/split5.csv", expected_rows=7,
        ),
        RemoteFile(
            name="dirs.zip", url=server.base + "/cpjku/dirs.zip", group="dirs",
            extract_to="micirp_dirs", strip_prefix="dirs/",
        ),
        RemoteFile(
            name="audio.1.zip", url=server.base + "/zenodo/audio.1.zip", group="audio",
            sha256=_sha256(blobs["/zenodo/audio.1.zip"]), size=len(blobs["/zenodo/audio.1.zip"]),
            extract_to="", strip_prefix=PREFIX,
        ),
    )  # fmt: skip
    return manifest, blobs, audio, dirs


def _run(tmp_path, manifest, **kwargs):
    messages = io.StringIO()
    kwargs.setdefault("retry_wait", 0.0)
    result = download.download_tau22(
        tmp_path / "tau22", manifest=manifest, stream=messages, **kwargs
    )
    return result, messages.getvalue()


def test_full_download_verifies_and_extracts(server, dataset, tmp_path):
    manifest, blobs, audio, dirs = dataset
    result, messages = _run(tmp_path, manifest)
    root = tmp_path / "tau22"
    assert result == {entry.name: "downloaded" for entry in manifest}
    for name, data in audio.items():
        assert (root / name[len(PREFIX) :]).read_bytes() == data
    assert (root / "meta.csv").is_file() and (
        root / "evaluation_setup" / "fold1_train.csv"
    ).is_file()
    assert (root / "splits" / "split5.csv").read_bytes() == blobs["/release/split5.csv"]
    for name, data in dirs.items():
        assert (root / "micirp_dirs" / name[len("dirs/") :]).read_bytes() == data
    # archives are removed after extraction, the .done records stay
    assert sorted(os.listdir(root / "downloads")) == sorted(
        ["audio.1.zip.done", "dirs.zip.done", "meta.zip.done", "split5.csv", "split5.csv.done"]
    )
    record = json.loads((root / "downloads" / "audio.1.zip.done").read_text())
    assert (
        record["sha256"] == _sha256(blobs["/zenodo/audio.1.zip"]) and record["files_extracted"] == 5
    )
    # files without a published checksum: downloaded, SHA-256 printed
    assert f"SHA-256 {_sha256(blobs['/cpjku/dirs.zip'])}" in messages
    assert f"SHA-256 {_sha256(blobs['/release/split5.csv'])}" in messages
    assert all(range_header is None for _, range_header in server.requests)

    # idempotent: a second run fetches nothing
    requests_before = len(server.requests)
    result, messages = _run(tmp_path, manifest)
    assert set(result.values()) == {"skipped"} and len(server.requests) == requests_before
    assert "already done, skipping" in messages


def test_a_corrupt_done_record_is_one_line_naming_it(server, dataset, tmp_path):
    manifest, *_ = dataset
    _run(tmp_path, manifest, only="splits")
    record = tmp_path / "tau22" / "downloads" / "split5.csv.done"
    for text in ("{half a record", "[1, 2]"):
        record.write_text(text)
        with pytest.raises(ValueError) as caught:
            _run(tmp_path, manifest, only="splits")
        message = str(caught.value)
        assert message.startswith(f"{record}: corrupt download record (") and "\n" not in message
        assert message.endswith("delete it to fetch split5.csv again.")


def test_only_selects_groups(server, dataset, tmp_path):
    manifest, *_ = dataset
    result, _ = _run(tmp_path, manifest, only="splits,dirs")
    assert set(result) == {"split5.csv", "dirs.zip"}
    assert {path for path, _ in server.requests} == {"/release/split5.csv", "/cpjku/dirs.zip"}
    with pytest.raises(ValueError, match="only must name some of meta, splits, dirs, audio"):
        _run(tmp_path, manifest, only="videos")


def test_resume_from_a_partial_file(server, dataset, tmp_path):
    manifest, blobs, audio, _ = dataset
    body = blobs["/zenodo/audio.1.zip"]
    downloads = tmp_path / "tau22" / "downloads"
    downloads.mkdir(parents=True)
    half = len(body) // 2
    (downloads / "audio.1.zip.part").write_bytes(body[:half])
    _run(tmp_path, manifest, only="audio", keep_archives=True)
    assert server.requests == [("/zenodo/audio.1.zip", f"bytes={half}-")]
    assert (downloads / "audio.1.zip").read_bytes() == body
    assert not (downloads / "audio.1.zip.part").exists()
    for name, data in audio.items():
        assert (tmp_path / "tau22" / name[len(PREFIX) :]).read_bytes() == data


def test_complete_partial_file_is_not_fetched_again(server, dataset, tmp_path):
    manifest, blobs, *_ = dataset
    body = blobs["/zenodo/audio.1.zip"]
    downloads = tmp_path / "tau22" / "downloads"
    downloads.mkdir(parents=True)
    (downloads / "audio.1.zip.part").write_bytes(body)
    result, _ = _run(tmp_path, manifest, only="audio")
    assert result == {"audio.1.zip": "downloaded"}
    assert server.requests == [("/zenodo/audio.1.zip", f"bytes={len(body)}-")]  # answered 416


def test_interrupted_transfer_is_retried_with_a_range_request(server, dataset, tmp_path):
    manifest, blobs, *_ = dataset
    body = blobs["/zenodo/audio.1.zip"]
    server.truncate["/zenodo/audio.1.zip"] = 4000
    result, messages = _run(tmp_path, manifest, only="audio", keep_archives=True)
    assert result == {"audio.1.zip": "downloaded"}
    assert server.requests == [
        ("/zenodo/audio.1.zip", None),
        ("/zenodo/audio.1.zip", "bytes=4000-"),
    ]
    assert (tmp_path / "tau22" / "downloads" / "audio.1.zip").read_bytes() == body
    assert "retry 1/3" in messages


def test_server_without_range_support_restarts(server, dataset, tmp_path):
    manifest, blobs, *_ = dataset
    server.ranges = False
    downloads = tmp_path / "tau22" / "downloads"
    downloads.mkdir(parents=True)
    (downloads / "audio.1.zip.part").write_bytes(b"garbage that must not survive")
    result, messages = _run(tmp_path, manifest, only="audio", keep_archives=True)
    assert result == {"audio.1.zip": "downloaded"}
    assert (downloads / "audio.1.zip").read_bytes() == blobs["/zenodo/audio.1.zip"]
    assert "ignored the resume request" in messages


def test_checksum_mismatch_names_the_file(server, dataset, tmp_path):
    manifest, blobs, *_ = dataset
    server.files["/zenodo/meta.zip"] = _zip({f"{PREFIX}meta.csv": b"tampered"})
    with pytest.raises(
        download.ChecksumMismatchError, match=r"meta.zip: md5 [0-9a-f]{32} does not match"
    ) as info:
        _run(tmp_path, manifest, only="meta")
    assert _md5(blobs["/zenodo/meta.zip"]) in str(info.value)
    root = tmp_path / "tau22"
    assert not (root / "meta.csv").exists()
    assert os.listdir(root / "downloads") == []  # the bad file is not kept as if it were good


def test_size_mismatch_is_reported(server, dataset, tmp_path):
    manifest, *_ = dataset
    server.files["/zenodo/audio.1.zip"] += b"extra"
    with pytest.raises(download.ChecksumMismatchError, match="audio.1.zip: size"):
        _run(tmp_path, manifest, only="audio")


def test_split_file_with_wrong_row_count(server, dataset, tmp_path):
    manifest, *_ = dataset
    server.files["/release/split5.csv"] = _split_csv(6)
    with pytest.raises(ValueError, match="split5.csv: 6 rows after the header, expected 7"):
        _run(tmp_path, manifest, only="splits")
    assert not (tmp_path / "tau22" / "splits" / "split5.csv").exists()


def test_http_errors_are_clear(server, dataset, tmp_path):
    manifest, *_ = dataset
    del server.files["/release/split5.csv"]
    with pytest.raises(download.DownloadError, match=r"split5.csv: HTTP 404 .*/release/split5.csv"):
        _run(tmp_path, manifest, only="splits")
    assert len(server.requests) == 1  # a missing file is not retried

    server.requests.clear()
    server.fail_status["/cpjku/dirs.zip"] = (503, 99)
    with pytest.raises(
        download.DownloadError, match=r"dirs.zip: giving up after 3 attempts .*HTTP 503"
    ):
        _run(tmp_path, manifest, only="dirs", retries=2)
    assert len(server.requests) == 3


def test_transient_server_error_is_retried(server, dataset, tmp_path):
    manifest, *_ = dataset
    server.fail_status["/cpjku/dirs.zip"] = (500, 1)
    result, _ = _run(tmp_path, manifest, only="dirs")
    assert result == {"dirs.zip": "downloaded"} and len(server.requests) == 2


def test_unreachable_server(tmp_path):
    entry = RemoteFile(name="x.zip", url="http://127.0.0.1:9/x.zip", group="meta", extract_to="")
    with pytest.raises(download.DownloadError, match=r"x.zip: giving up after 2 attempts"):
        _run(tmp_path, [entry], retries=1)


# ----------------------------------------------------------------------------- unsafe archives


def _outside_files(tmp_path):
    return sorted(name for name in os.listdir(tmp_path) if name not in ("tau22", "target"))


@pytest.mark.parametrize(
    "member",
    ["../evil.txt", "audio/../../evil.txt", "/tmp/keras_asc_abs_evil.txt", "C:/evil.txt"],
)
def test_zip_members_escaping_the_target_are_refused(server, tmp_path, member):
    body = _zip({"audio/good.wav": b"ok", member: b"evil"})
    server.files["/bad.zip"] = body
    entry = RemoteFile(name="bad.zip", url=server.base + "/bad.zip", group="meta", extract_to="")
    with pytest.raises(download.UnsafeArchiveError, match="refusing to extract") as info:
        _run(tmp_path, [entry])
    assert member in str(info.value)
    assert not (tmp_path / "tau22" / "audio").exists()  # checked before anything is written
    assert _outside_files(tmp_path) == []
    assert not os.path.exists("/tmp/keras_asc_abs_evil.txt")


def test_zip_symlink_member_is_refused(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo("audio/link")
        info.external_attr = 0o120777 << 16
        archive.writestr(info, "/etc/passwd")
    (tmp_path / "link.zip").write_bytes(buffer.getvalue())
    with pytest.raises(download.UnsafeArchiveError, match="symbolic link"):
        download.safe_extract(tmp_path / "link.zip", tmp_path / "target")
    assert not (tmp_path / "target" / "audio").exists()


def test_existing_symlink_inside_target_cannot_redirect_extraction(tmp_path):
    target = tmp_path / "target"
    outside = tmp_path / "outside"
    target.mkdir()
    outside.mkdir()
    os.symlink(outside, target / "audio")
    (tmp_path / "ok.zip").write_bytes(_zip({"audio/x.wav": b"x"}))
    with pytest.raises(download.UnsafeArchiveError, match="outside"):
        download.safe_extract(tmp_path / "ok.zip", target)
    assert os.listdir(outside) == []


def _tar(tmp_path, add):
    path = tmp_path / "archive.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        add(archive)
    return path


def _add_file(archive, name, data=b"data"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def test_tar_extraction_and_refusals(tmp_path):
    good = _tar(
        tmp_path, lambda a: (_add_file(a, "dirs/A.wav", b"abc"), _add_file(a, "dirs/B.wav"))
    )
    assert download.safe_extract(good, tmp_path / "target", strip_prefix="dirs/") == 2
    assert (tmp_path / "target" / "A.wav").read_bytes() == b"abc"

    def dotdot(archive):
        _add_file(archive, "../evil.txt")

    def symlink(archive):
        info = tarfile.TarInfo("link")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc"
        archive.addfile(info)

    def hardlink(archive):
        info = tarfile.TarInfo("hard")
        info.type, info.linkname = tarfile.LNKTYPE, "../../etc/passwd"
        archive.addfile(info)

    for add, match in ((dotdot, r"\.\."), (symlink, "is a link"), (hardlink, "is a link")):
        bad = _tar(tmp_path, add)
        with pytest.raises(download.UnsafeArchiveError, match=match):
            download.safe_extract(bad, tmp_path / "target2")
        assert not (tmp_path / "target2").exists() or os.listdir(tmp_path / "target2") == []
    assert not (tmp_path / "evil.txt").exists()


def test_not_an_archive(tmp_path):
    (tmp_path / "plain.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="neither a zip nor a tar"):
        download.safe_extract(tmp_path / "plain.zip", tmp_path / "target")


# ----------------------------------------------------------------------------- the data table


def test_builtin_manifest():
    manifest = download.tau22_manifest()
    names = [entry.name for entry in manifest]
    audio = [entry for entry in manifest if entry.group == "audio"]
    assert [entry.name for entry in audio] == [
        f"TAU-urban-acoustic-scenes-2022-mobile-development.audio.{i}.zip" for i in range(1, 17)
    ]
    assert "TAU-urban-acoustic-scenes-2022-mobile-development.meta.zip" in names
    assert "TAU-urban-acoustic-scenes-2022-mobile-development.doc.zip" in names
    for entry in manifest:
        if entry.group in ("meta", "audio"):
            assert entry.url.startswith("https://zenodo.org/records/6337421/files/")
            assert len(entry.md5) == 32 and entry.strip_prefix == PREFIX and entry.extract_to == ""
    assert len({entry.md5 for entry in manifest if entry.md5}) == 18
    splits = {entry.name: entry.expected_rows for entry in manifest if entry.group == "splits"}
    assert splits == {
        "split5.csv": 6980, "split10.csv": 13960, "split25.csv": 34900,
        "split50.csv": 69800, "split100.csv": 139970, "test.csv": 29680,
    }  # fmt: skip
    dirs = [entry for entry in manifest if entry.group == "dirs"]
    assert len(dirs) == 1 and dirs[0].md5 is None and dirs[0].sha256 is None
    mirrored = download.tau22_manifest(
        record_url="http://127.0.0.1:1/r/", splits_url="http://127.0.0.1:1/s/"
    )
    assert all(
        "zenodo.org" not in entry.url and "dcase2024" not in entry.url
        for entry in mirrored
        if entry.group != "dirs"
    )


def test_remote_file_validation():
    with pytest.raises(ValueError, match="group must be one of"):
        RemoteFile(name="a.zip", url="http://x/a.zip", group="video", extract_to="")
    with pytest.raises(ValueError, match="exactly one of extract_to"):
        RemoteFile(name="a.zip", url="http://x/a.zip", group="meta")
    with pytest.raises(ValueError, match="md5 must be 32 lowercase hex digits"):
        RemoteFile(name="a.zip", url="http://x/a.zip", group="meta", extract_to="", md5="ABC")
    with pytest.raises(ValueError, match="plain file name"):
        RemoteFile(name="../a.zip", url="http://x/a.zip", group="meta", extract_to="")


def test_cli_with_a_manifest_file(server, dataset, tmp_path, capsys):
    manifest, *_ = dataset
    path = tmp_path / "mirror.json"
    path.write_text(json.dumps([dataclasses.asdict(entry) for entry in manifest]))
    data_dir = tmp_path / "cli"
    assert (
        cli_main(
            [
                "download",
                "tau22",
                str(data_dir),
                "--manifest",
                str(path),
                "--only",
                "splits,dirs",
                "--quiet",
            ]
        )
        == 0
    )
    assert (data_dir / "splits" / "split5.csv").is_file()
    assert len(os.listdir(data_dir / "micirp_dirs")) == 3
    assert "2 file(s) downloaded" in capsys.readouterr().out

    assert cli_main(["download", "tau22", str(data_dir), "--dry-run", "--only", "meta"]) == 0
    listing = capsys.readouterr().out
    assert "meta.zip" in listing and "md5 419b6ff6570f1030730352dc80cd8d15" in listing
    assert "audio.1.zip" not in listing

    del server.files["/zenodo/meta.zip"]
    assert (
        cli_main(
            [
                "download",
                "tau22",
                str(data_dir),
                "--manifest",
                str(path),
                "--only",
                "meta",
                "--quiet",
            ]
        )
        == 1
    )
    assert "HTTP 404" in capsys.readouterr().err
