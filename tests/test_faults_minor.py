"""Minor faults at the command line, each a one-line error in our words that names the file or
argument and says what was expected: a torch file refused by the weights-only loader, --data
naming a file, a negative --retries, and install hints that work."""

import pickle

import pytest

from keras_asc.cli import main
from keras_asc.text import install_hint


def _error_lines(err):
    assert "Traceback" not in err, err
    return err.splitlines()


class _CallsSystem:
    """Unpickles by calling os.system: torch's loader refuses module os (posix) outright."""

    def __reduce__(self):
        import os

        return (os.system, ("echo never run",))


class _Opaque:
    """A class torch's weights-only loader does not know."""


@pytest.mark.parametrize(
    "content, reason",
    [
        (
            {"conv.weight": _CallsSystem()},
            "it pickles posix.system, and module posix is never loaded from a weights file",
        ),
        (
            {"conv.weight": _Opaque()},
            f"it pickles {__name__}._Opaque, which weights_only loading refuses",
        ),
    ],
    ids=["blocked-module", "unknown-class"],
)
def test_import_torch_refusal_is_whole_sentences_in_one_line(tmp_path, capsys, content, reason):
    torch = pytest.importorskip("torch")
    weights = tmp_path / "weights.pt"
    if isinstance(content["conv.weight"], _CallsSystem):
        with open(weights, "wb") as handle:
            pickle.dump(content, handle, protocol=2)  # torch.save would refuse to write it
    else:
        torch.save(content, weights)
    out = tmp_path / "model.keras"
    code = main(["import-torch", "dcase24_baseline", str(weights), "--out", str(out)])
    assert code == 2
    assert _error_lines(capsys.readouterr().err) == [
        f"keras-asc import-torch: error: Could not read {str(weights)!r} safely with "
        f"torch.load(weights_only=True): {reason}. If it is a checkpoint that pickles other "
        'objects, re-save only the state dict where you trust the file, e.g. '
        'torch.save(ckpt["state_dict"], "weights.pt").'
    ]
    assert not out.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--model", "moflenet57", "--data", "{file}", "--out", "{tmp}/run"],
        ["evaluate", "{tmp}/model.keras", "--data", "{file}"],
        ["prepare", "--data", "{file}", "--split", "25", "--cache", "{tmp}/cache"],
        ["quantize", "{tmp}/model.keras", "--data", "{file}"],
    ],
    ids=lambda argv: argv[0],
)
def test_data_naming_a_regular_file_says_it_is_a_file(tmp_path, capsys, argv):
    data = tmp_path / "tau22.zip"
    data.write_bytes(b"PK\x05\x06" + bytes(18))
    argv = [a.format(file=data, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    assert _error_lines(capsys.readouterr().err) == [
        f"keras-asc {argv[0]}: error: --data {str(data)!r} is a file; expected the dataset "
        "folder (with audio/ and the split files, as `keras-asc download` or `keras-asc synth` "
        "write it)."
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tau22.zip"]


def test_download_refuses_negative_retries_before_creating_anything(tmp_path, capsys):
    target = tmp_path / "tau22"
    assert main(["download", "tau22", str(target), "--only", "splits", "--retries", "-1"]) == 2
    assert _error_lines(capsys.readouterr().err) == [
        "keras-asc download: error: --retries must be 0 or more (retries after the first "
        "attempt). Received: -1"
    ]
    assert not target.exists()


def test_the_python_download_refuses_negative_retries_too(tmp_path):
    from keras_asc.data.download import download_tau22

    with pytest.raises(ValueError, match=r"^retries must be an integer, 0 or more .* retries=-1$"):
        download_tau22(tmp_path / "tau22", only="splits", retries=-1)
    assert not (tmp_path / "tau22").exists()


def test_install_hints_give_the_index_and_the_clone_form(tmp_path, capsys, monkeypatch):
    assert install_hint("micro") == (
        'pip install "keras-asc[micro]" (from a clone of the repository: pip install ".[micro]")'
    )
    # A hint as the user sees it: import-torch without torch (not on the torch backend, which
    # has imported torch before the command runs).
    import builtins

    import keras

    if keras.backend.backend() == "torch":
        return

    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("No module named 'torch'")
        return real_import(name, *args, **kwargs)

    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"not read")
    monkeypatch.setattr(builtins, "__import__", no_torch)
    code = main(["import-torch", "dcase24_baseline", str(weights), "--out", str(tmp_path / "m.keras")])
    assert code == 1
    assert _error_lines(capsys.readouterr().err) == [
        "keras-asc import-torch: error: Reading PyTorch files needs torch: "
        + install_hint("torch")
        + "."
    ]
