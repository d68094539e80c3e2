"""End to end on a small real subset: `qrnn prepare -> train -> evaluate -> predict` (~2 min)."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def qrnn(*args, env, input=None, check=True):
    proc = subprocess.run([sys.executable, "-m", "qrnn.sentiment.cli", *args], env=env, input=input,
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"qrnn {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def run(shared_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    env = {**os.environ, "QRNN_CACHE": str(tmp / "cache"), "QRNN_DATA": str(shared_data)}
    prep = qrnn("prepare", "--limit", "150", env=env)
    assert "prepared:" in prep.stdout
    again = qrnn("prepare", "--limit", "150", env=env)
    assert "reusing prepared data" in again.stderr
    out = tmp / "run"
    # the paper's model at full size, a tiny subset: 300 train reviews minus 60 for validation
    train = qrnn("train", "--limit", "150", "--epochs", "1", "--valid-size", "60", "--out", str(out),
                 "--checkpoint-every", "4", env=env)
    assert "best checkpoint:" in train.stdout
    return out, env


def test_train_writes_checkpoint_logs_and_plot(run):
    out, _ = run
    best = out / "best"
    assert {p.name for p in best.iterdir()} >= {"model.safetensors", "config.json", "vocab.json"}
    config = json.loads((best / "config.json").read_text())
    assert config["model"]["num_layers"] == 4 and config["model"]["hidden_size"] == 256
    assert config["train"]["batch_size"] == 24 and config["train"]["lr"] == 1e-3
    (record,) = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert 0.0 <= record["valid_accuracy"] <= 1.0 and record["train_reviews_per_s"] > 0
    assert (out / "curves.png").stat().st_size > 1000


def test_evaluate_json(run):
    out, env = run
    proc = qrnn("evaluate", str(out / "best"), "--limit", "50", "--json", env=env)
    result = json.loads(proc.stdout)
    assert result["n"] == 100 and result["split"] == "test"
    (tn, fp), (fn, tp) = result["confusion"]
    assert tn + fp == 50 and fn + tp == 50
    assert result["correct"] == tn + tp
    assert result["accuracy"] == pytest.approx((tn + tp) / 100)
    assert result["reviews_per_s"] > 0


def test_predict_arguments_stdin_file_and_json(run, tmp_path):
    out, env = run
    texts = ["A wonderful, moving film with superb acting.", "Dreadful. A boring waste of time."]
    args_out = qrnn("predict", str(out / "best"), *texts, "--json", env=env).stdout.splitlines()
    stdin_out = qrnn("predict", str(out / "best"), "--json", input="\n".join(texts) + "\n",
                     env=env).stdout.splitlines()
    f = tmp_path / "reviews.txt"
    f.write_text("\n".join(texts) + "\n", encoding="utf-8")
    file_out = qrnn("predict", str(out / "best"), "--file", str(f), "--json", env=env).stdout.splitlines()
    assert args_out == stdin_out == file_out and len(args_out) == 2
    for line, text in zip(args_out, texts):
        rec = json.loads(line)
        assert rec["text"] == text and rec["label"] in ("pos", "neg")
        assert 0.5 <= rec["probability"] <= 1.0
        assert rec["p_positive"] == pytest.approx(rec["probability"] if rec["label"] == "pos"
                                                  else 1 - rec["probability"])
    plain = qrnn("predict", str(out / "best"), texts[0], env=env).stdout
    assert plain.split("\t")[0] in ("pos", "neg")


def test_bad_checkpoint_path_is_a_clear_error(run, tmp_path):
    _, env = run
    proc = qrnn("predict", str(tmp_path / "missing"), "text", env=env, check=False)
    assert proc.returncode == 2
    assert "not a checkpoint folder" in proc.stderr and "Traceback" not in proc.stderr
