"""The `qrnn` command's handling of user mistakes: one clear line, exit code 2, no traceback."""

import json

import pytest
import torch

from qrnn.sentiment.checkpoint import save_checkpoint
from qrnn.sentiment.cli import main
from qrnn.sentiment.model import ModelConfig, SentimentClassifier
from qrnn.sentiment.vocab import Vocabulary


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = SentimentClassifier(ModelConfig(vocab_size=4, embed_dim=3, hidden_size=2, num_layers=1))
    vocab = Vocabulary(["<unk>", "good", "bad", "film"], lowercase=True)
    return save_checkpoint(tmp_path / "ckpt", model, vocab, {"train": {"max_len": 10}})


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_predict_works_and_keeps_output_on_one_line(checkpoint, capsys):
    code, out, _ = run(capsys, "predict", str(checkpoint), "good film", "bad\tfilm\nreally")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 2 and all(len(l.split("\t")) == 3 for l in lines)
    assert lines[1].split("\t")[2] == "bad film really"


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "config.json").write_text("{not json"), r"config\.json: unreadable"),
    (lambda d: (d / "config.json").write_text(json.dumps({"format": "qrnn-sentiment-checkpoint",
                                                            "version": 1, "train": {}})),
     r"config\.json: no 'model' section"),
    (lambda d: (d / "model.safetensors").write_bytes(b"\0" * 100), r"model\.safetensors: unreadable"),
])
def test_damaged_checkpoint_is_one_clear_line(checkpoint, capsys, damage, message):
    damage(checkpoint)
    code, _, err = run(capsys, "predict", str(checkpoint), "good")
    assert code == 2
    assert err.startswith("qrnn predict: error: ") and len(err.strip().splitlines()) == 1
    assert "damaged or incomplete" in err
    import re

    assert re.search(message, err)


def test_weights_that_do_not_fit_the_config(checkpoint, capsys):
    config = json.loads((checkpoint / "config.json").read_text())
    config["model"]["hidden_size"] = 3
    (checkpoint / "config.json").write_text(json.dumps(config))
    code, _, err = run(capsys, "predict", str(checkpoint), "good")
    assert code == 2 and "do not fit config.json" in err


def test_blank_text_argument_is_an_error(checkpoint, capsys):
    code, _, err = run(capsys, "predict", str(checkpoint), "good", "   ")
    assert code == 2 and "TEXT argument 2 is blank" in err


def test_file_that_is_not_utf8_or_a_folder(checkpoint, capsys, tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9\n".encode("latin-1"))
    code, _, err = run(capsys, "predict", str(checkpoint), "--file", str(bad))
    assert code == 2 and f"--file {bad}: not UTF-8" in err
    code, _, err = run(capsys, "predict", str(checkpoint), "--file", str(tmp_path))
    assert code == 2 and "Is a directory" in err


def test_missing_data_folder_is_not_created(capsys, tmp_path):
    missing = tmp_path / "typo"
    code, _, err = run(capsys, "prepare", "--data", str(missing))
    assert code == 2 and f"--data {missing}: no such folder" in err
    assert not missing.exists()


def test_bad_thread_count(checkpoint, capsys, monkeypatch):
    monkeypatch.setenv("QRNN_THREADS", "two")
    code, _, err = run(capsys, "predict", str(checkpoint), "good")
    assert code == 2 and "QRNN_THREADS='two'" in err
