"""Self-describing checkpoints: safetensors weights + JSON config + the vocabulary, no pickles.

A checkpoint is a folder:
    model.safetensors      weights (state_dict of `SentimentClassifier`)
    config.json            {"format", "version", "model": ModelConfig, "train": TrainConfig, ...}
    vocab.json             the vocabulary the ids refer to (so predict needs nothing else)
    optimizer.safetensors  + optimizer.json and state.json: only in resumable "last" checkpoints

Folders are written next to their destination and swapped in with renames, so a crash never
leaves a half-written checkpoint where a complete one was.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from qrnn.sentiment.model import ModelConfig, SentimentClassifier
from qrnn.sentiment.vocab import Vocabulary, current_umask

FORMAT = "qrnn-sentiment-checkpoint"
VERSION = 1


class CheckpointError(RuntimeError):
    pass


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{key}"] = value.contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_state(tensors: dict, meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in list(tensors.items()) + list(meta["scalars"].items()):
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(path: Path, model: SentimentClassifier, vocab: Vocabulary, extra_config: dict,
                    optimizer: torch.optim.Optimizer | None = None,
                    state: dict | None = None) -> Path:
    """Write a checkpoint folder at `path` atomically (build beside it, then swap)."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    old = path.with_name(f"{path.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    weights = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(tmp / "model.safetensors"))
    _write_json(tmp / "config.json", {"format": FORMAT, "version": VERSION,
                                      "model": model.config.to_dict(), **extra_config})
    vocab.to_json(tmp / "vocab.json")
    if optimizer is not None:
        tensors, meta = _optimizer_tensors(optimizer)
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        _write_json(tmp / "optimizer.json", meta)
    if state is not None:
        _write_json(tmp / "state.json", state)
    for f in tmp.iterdir():  # make the contents durable before the rename publishes them
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(f, 0o666 & ~current_umask())  # a copied checkpoint stays readable by others
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)
    return path


def resolve(path: Path) -> Path:
    """The checkpoint folder at `path`, or the previous one if a swap was interrupted."""
    path = Path(path)
    if (path / "config.json").is_file():
        return path
    old = path.with_name(f"{path.name}.old")
    if (old / "config.json").is_file():
        return old
    raise CheckpointError(
        f"{path} is not a checkpoint folder (no config.json in it). Pass the folder that "
        f"`qrnn train` wrote, e.g. runs/imdb/best."
    )


def _damaged(path: Path, what: str) -> CheckpointError:
    return CheckpointError(f"{path}: {what}. The checkpoint is damaged or incomplete: copy it "
                           f"again, or train again.")


def read_config(path: Path) -> dict:
    path = resolve(path)
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _damaged(path / "config.json", f"unreadable ({err})") from err
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{path / 'config.json'} is not a qrnn sentiment checkpoint")
    if config.get("version") != VERSION:
        raise CheckpointError(
            f"{path / 'config.json'} has checkpoint version {config.get('version')}; "
            f"this qrnn reads version {VERSION}"
        )
    for key in ("model", "train"):
        if not isinstance(config.get(key), dict):
            raise _damaged(path / "config.json", f"no {key!r} section")
    return config


def load_checkpoint(path: Path, map_location: str = "cpu") -> tuple[SentimentClassifier, Vocabulary, dict]:
    """-> (model in eval mode, vocabulary, config dict). Needs nothing but the folder."""
    path = resolve(path)
    config = read_config(path)
    try:
        model = SentimentClassifier(ModelConfig(**config["model"]))
    except (TypeError, ValueError) as err:
        raise _damaged(path / "config.json", f"its model section is not valid ({err})") from err
    try:
        weights = load_file(str(path / "model.safetensors"), device=map_location)
    except Exception as err:  # safetensors raises its own SafetensorError for damaged files
        raise _damaged(path / "model.safetensors", f"unreadable ({err})") from err
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[1:2] or [str(err)[:200]]
        raise _damaged(path / "model.safetensors",
                       f"its weights do not fit config.json ({first[0].strip()})") from err
    model.eval()
    return model, Vocabulary.from_json(path / "vocab.json"), config


def load_training_state(path: Path, optimizer: torch.optim.Optimizer) -> dict:
    """Restore the optimizer from a resumable checkpoint; returns its state.json."""
    path = resolve(path)
    tensors = load_file(str(path / "optimizer.safetensors"))
    meta = json.loads((path / "optimizer.json").read_text(encoding="utf-8"))
    optimizer.load_state_dict(_optimizer_state(tensors, meta))
    return json.loads((path / "state.json").read_text(encoding="utf-8"))
