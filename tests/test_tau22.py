"""TAU22 metadata and DCASE 2024 splits: the real split files and a fake TAU22 tree."""

import collections
import csv
import os

import pytest

from keras_asc.data import tau22

OFFICIAL_TRAIN_ROWS = {5: 6980, 10: 13960, 25: 34900, 50: 69800}
TEST_ROWS = 29680


@pytest.fixture(scope="module")
def splits_dir(shared_data):
    return shared_data / "dcase2024_splits"


@pytest.fixture(scope="module")
def real_splits(splits_dir, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("no_audio")
    loaded = {
        split: tau22.load_split(data_dir, split, splits_dir=splits_dir, check_files=False)
        for split in (5, 10, 25, 50, "test")
    }
    return loaded


def _names(clips):
    return {clip.filename for clip in clips}


# ----------------------------------------------------------------------------- constants


def test_labels_devices_and_groups():
    assert tau22.SCENE_LABELS == tuple(sorted(tau22.SCENE_LABELS))
    assert len(tau22.SCENE_LABELS) == 10
    assert tau22.SCENE_LABELS[0] == "airport" and tau22.SCENE_LABELS[-1] == "tram"
    assert tau22.DEVICES == ("a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6")
    assert tau22.DEVICE_GROUPS == {
        "real": ("a", "b", "c"),
        "seen": ("s1", "s2", "s3"),
        "unseen": ("s4", "s5", "s6"),
    }


def test_parse_filename():
    clip = tau22.parse_filename("audio/street_pedestrian-barcelona-260-7891-6-s2.wav")
    assert clip == tau22.Clip(
        filename="audio/street_pedestrian-barcelona-260-7891-6-s2.wav",
        scene_label="street_pedestrian",
        device="s2",
        city="barcelona",
        location="barcelona-260",
        segment="7891",
        subsegment=6,
    )
    assert clip.label == 7
    assert clip.device_index == 4
    assert clip.device_group == "seen"
    assert tau22.parse_filename("audio/tram-vienna-1-2-0-s6.wav").device_group == "unseen"


@pytest.mark.parametrize(
    "name, reason",
    [
        ("audio/airport-lisbon-1000-40000-0.wav", "Malformed"),
        ("audio/airport-lisbon-1000-40000-0-a.flac", "Malformed"),
        ("audio/airfield-lisbon-1000-40000-0-a.wav", "unknown scene 'airfield'"),
        ("audio/airport-lisbon-1000-40000-0-d.wav", "unknown device 'd'"),
        ("audio/airport-lisbon-x1-40000-0-a.wav", "location='x1'"),
    ],
)
def test_parse_filename_rejects_malformed_names(name, reason):
    with pytest.raises(ValueError, match=reason) as info:
        tau22.parse_filename(name)
    assert name in str(info.value)


@pytest.mark.parametrize(
    "spelling, expected",
    [(5, 5), ("5", 5), ("split25", 25), ("25%", 25), ("SPLIT100", 100), ("test", "test")],
)
def test_normalize_split(spelling, expected):
    assert tau22.normalize_split(spelling) == expected


@pytest.mark.parametrize("spelling", [7, "split7", "val", "", True, None, 2.5])
def test_normalize_split_rejects(spelling):
    with pytest.raises(ValueError, match="accepted: 5, 10, 25, 50, 100"):
        tau22.normalize_split(spelling)


# ----------------------------------------------------------------------------- real split files


def test_real_split_row_counts(real_splits):
    for split, rows in OFFICIAL_TRAIN_ROWS.items():
        assert len(real_splits[split]) == rows
        assert tau22.OFFICIAL_SPLIT_ROWS[split] == rows
    assert len(real_splits["test"]) == TEST_ROWS == tau22.OFFICIAL_SPLIT_ROWS["test"]


def test_real_splits_are_nested_and_disjoint_from_test(real_splits):
    names = {split: _names(clips) for split, clips in real_splits.items()}
    assert names[5] < names[10] < names[25] < names[50]
    for split in OFFICIAL_TRAIN_ROWS:
        assert not names[split] & names["test"]


def test_real_splits_device_mix(real_splits):
    """Training subsets hold a, b, c and s1-s3 only; the test split holds all nine devices."""
    for split in OFFICIAL_TRAIN_ROWS:
        summary = tau22.split_summary(real_splits[split])
        assert summary["device_groups"]["unseen"] == 0
        assert all(summary["devices"][device] > 0 for device in ("a", "b", "c", "s1", "s2", "s3"))
        # device a dominates: 73 % of every subset (5,080 of 6,980 in split5)
        assert 0.72 < summary["devices"]["a"] / summary["clips"] < 0.74
    assert tau22.split_summary(real_splits[5])["devices"] == {
        "a": 5080, "b": 380, "c": 380, "s1": 380, "s2": 380, "s3": 380,
        "s4": 0, "s5": 0, "s6": 0,
    }  # fmt: skip
    test = tau22.split_summary(real_splits["test"])
    assert test["devices"] == {
        "a": 3300, "b": 3290, "c": 3290, "s1": 3300, "s2": 3300, "s3": 3300,
        "s4": 3300, "s5": 3300, "s6": 3300,
    }  # fmt: skip
    assert test["device_groups"] == {"real": 9880, "seen": 9900, "unseen": 9900}


def test_real_splits_have_ten_labels_and_disjoint_locations(real_splits):
    for clips in real_splits.values():
        summary = tau22.split_summary(clips)
        assert len(summary["scenes"]) == 10 and min(summary["scenes"].values()) > 0
        assert sum(summary["scenes"].values()) == len(clips)
    assert tau22.split_summary(real_splits[5])["scenes"]["airport"] == 700
    assert set(tau22.split_summary(real_splits["test"])["scenes"].values()) == {2960, 2970}
    # the development split holds out whole recording locations
    train_locations = {clip.location for clip in real_splits[50]}
    test_locations = {clip.location for clip in real_splits["test"]}
    assert not train_locations & test_locations
    assert {clip.city for clip in real_splits["test"]} == {clip.city for clip in real_splits[50]}


def test_split_files_found_in_data_dir_and_splits_folder(splits_dir, tmp_path):
    lines = (splits_dir / "split5.csv").read_text().splitlines()
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "split5.csv").write_text("\n".join(lines[:11]) + "\n")
    assert len(tau22.load_split(tmp_path, "split5", check_files=False)) == 10
    # data_dir comes before data_dir/splits ...
    (tmp_path / "split5.csv").write_text("\n".join(lines[:4]) + "\n")
    assert len(tau22.load_split(tmp_path, 5, check_files=False)) == 3
    # ... and splits_dir before both
    other = tmp_path / "other"
    other.mkdir()
    (other / "split5.csv").write_text("\n".join(lines[:2]) + "\n")
    assert len(tau22.load_split(tmp_path, 5, splits_dir=other, check_files=False)) == 1
    assert tau22.find_split_file(tmp_path, 5, other) == os.path.join(other, "split5.csv")


def test_missing_split_file_lists_the_places_searched(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        tau22.load_split(tmp_path, 25)
    message = str(info.value)
    assert "split25.csv" in message and os.path.join(str(tmp_path), "splits") in message


# ----------------------------------------------------------------------------- a fake TAU22 tree


@pytest.fixture
def fake_tau22(splits_dir, tmp_path):
    """A TAU22 tree with real names: 120 training and 60 test clips of empty audio files,
    ``evaluation_setup/fold1_*`` files and ``meta.csv``, no DCASE 2024 split files."""
    with open(splits_dir / "split5.csv", newline="") as handle:
        train_rows = list(csv.reader(handle, delimiter="\t"))[1:]
    with open(splits_dir / "test.csv", newline="") as handle:
        test_rows = list(csv.reader(handle, delimiter="\t"))[1:]
    train_rows, test_rows = train_rows[::58][:120], test_rows[::494][:60]
    root = tmp_path / "TAU-urban-acoustic-scenes-2022-mobile-development"
    (root / "audio").mkdir(parents=True)
    (root / "evaluation_setup").mkdir()
    for name, _ in train_rows + test_rows:
        (root / name).write_bytes(b"")
    write = _write_table
    write(root / "evaluation_setup" / "fold1_train.csv", ["filename", "scene_label"], train_rows)
    write(root / "evaluation_setup" / "fold1_evaluate.csv", ["filename", "scene_label"], test_rows)
    meta = []
    for name, label in train_rows + test_rows:
        clip = tau22.parse_filename(name)
        meta.append([name, label, clip.location, clip.device])
    write(root / "meta.csv", ["filename", "scene_label", "identifier", "source_label"], meta)
    return root, train_rows, test_rows


def _write_table(path, header, rows):
    with open(path, "w", newline="") as handle:
        handle.write("\t".join(header) + "\n")
        for row in rows:
            handle.write("\t".join(row) + "\n")


def test_fake_tree_falls_back_to_evaluation_setup(fake_tau22):
    root, train_rows, test_rows = fake_tau22
    train = tau22.load_split(root, 100)
    test = tau22.load_split(root, "test")
    assert [clip.filename for clip in train] == [name for name, _ in train_rows]
    assert [clip.scene_label for clip in test] == [label for _, label in test_rows]
    assert len(train) == 120 and len(test) == 60
    with pytest.raises(FileNotFoundError, match="split50.csv"):
        tau22.load_split(root, 50)


def test_read_meta(fake_tau22):
    root, train_rows, test_rows = fake_tau22
    clips = tau22.read_meta(root)
    assert len(clips) == 180
    assert collections.Counter(clip.device for clip in clips)["a"] > 0
    assert [clip.filename for clip in clips] == [name for name, _ in train_rows + test_rows]


def test_read_meta_rejects_a_contradicting_identifier(fake_tau22):
    root, train_rows, _ = fake_tau22
    lines = (root / "meta.csv").read_text().splitlines()
    name, label, identifier, device = lines[3].split("\t")
    lines[3] = "\t".join([name, label, "nowhere-1", device])
    (root / "meta.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"meta.csv, line 4: identifier 'nowhere-1'") as info:
        tau22.read_meta(root)
    assert name in str(info.value)


def test_missing_audio_files_are_reported(fake_tau22):
    root, train_rows, _ = fake_tau22
    removed = [name for name, _ in train_rows[10:17]]
    for name in removed:
        (root / name).unlink()
    with pytest.raises(tau22.MissingFilesError) as info:
        tau22.load_split(root, 100)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "7 of 120 audio files" in message
    assert "fold1_train.csv" in message
    assert all(name in message for name in removed[:5])  # a few examples, not all
    assert removed[6] not in message
    assert info.value.missing == tuple(removed)

    with pytest.warns(UserWarning, match="7 of 120 audio files"):
        clips = tau22.load_split(root, 100, on_missing="warn")
    assert len(clips) == 113 and not set(removed) & {clip.filename for clip in clips}
    assert len(tau22.load_split(root, 100, check_files=False)) == 120
    with pytest.raises(ValueError, match="on_missing must be 'raise' or 'warn'"):
        tau22.load_split(root, 100, on_missing="ignore")


def _corrupt_split(root, rows, edit):
    """Write split10.csv from ``rows`` after ``edit(rows)`` and return its path."""
    rows = [list(row) for row in rows]
    edit(rows)
    path = root / "split10.csv"
    _write_table(path, ["filename", "scene_label"], rows)
    return path


def test_unknown_label_is_an_error_naming_file_and_row(fake_tau22):
    root, train_rows, _ = fake_tau22

    def edit(rows):
        rows[4][1] = "beach"

    _corrupt_split(root, train_rows, edit)
    with pytest.raises(
        ValueError, match=r"split10.csv, line 6: unknown scene label 'beach'"
    ) as info:
        tau22.load_split(root, 10)
    assert train_rows[4][0] in str(info.value)


def test_duplicate_row_is_an_error(fake_tau22):
    root, train_rows, _ = fake_tau22

    def edit(rows):
        rows.append(list(rows[2]))

    _corrupt_split(root, train_rows, edit)
    with pytest.raises(ValueError, match=r"line 122: duplicate row .* \(first listed on line 4\)"):
        tau22.load_split(root, 10)


def test_label_contradicting_the_file_name_is_an_error(fake_tau22):
    root, train_rows, _ = fake_tau22
    index = next(i for i, (_, label) in enumerate(train_rows) if label != "park")

    def edit(rows):
        rows[index][1] = "park"

    _corrupt_split(root, train_rows, edit)
    with pytest.raises(ValueError, match=f"line {index + 2}: label 'park' contradicts") as info:
        tau22.load_split(root, 10)
    assert train_rows[index][0] in str(info.value)


def test_malformed_file_name_in_a_split_names_the_row(fake_tau22):
    root, train_rows, _ = fake_tau22

    def edit(rows):
        rows[0][0] = "audio/airport-lisbon.wav"

    _corrupt_split(root, train_rows, edit)
    with pytest.raises(ValueError, match=r"split10.csv, line 2: Malformed TAU22 file name"):
        tau22.load_split(root, 10)


def test_training_split_overlapping_test_is_an_error(fake_tau22):
    root, train_rows, test_rows = fake_tau22

    def edit(rows):
        rows.append(list(test_rows[7]))

    path = _corrupt_split(root, train_rows, edit)
    with pytest.raises(
        ValueError, match="1 clip\\(s\\) of split 10 are also in the test split"
    ) as info:
        tau22.load_split(root, 10)
    message = str(info.value)
    assert test_rows[7][0] in message
    assert f"{path}, line 122" in message and "fold1_evaluate.csv, line 9" in message
    assert len(tau22.load_split(root, 10, check_test_overlap=False)) == 121


def test_bad_header_is_an_error(fake_tau22):
    root, train_rows, _ = fake_tau22
    _write_table(root / "split25.csv", ["file", "label"], train_rows)
    with pytest.raises(ValueError, match="line 1 must be the header 'filename<TAB>scene_label'"):
        tau22.load_split(root, 25)


def test_split_summary_and_format(fake_tau22):
    root, train_rows, _ = fake_tau22
    clips = tau22.load_split(root, 100)
    summary = tau22.split_summary(clips)
    assert summary["clips"] == 120
    assert list(summary["devices"]) == list(tau22.DEVICES)
    assert list(summary["scenes"]) == list(tau22.SCENE_LABELS)
    expected = collections.Counter(name.rsplit("-", 1)[1][:-4] for name, _ in train_rows)
    assert summary["devices"] == {device: expected[device] for device in tau22.DEVICES}
    text = tau22.format_split_summary(summary)
    assert text.splitlines()[0] == "clips: 120"
    assert f"a={expected['a']}" in text and "unseen=0" in text
