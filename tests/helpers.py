"""Shared test scaffolding: config builders, data writers, process launchers. Test modules import from here,
never from each other."""

from __future__ import annotations

from pathlib import Path


REPO = Path(__file__).resolve().parents[1]


def tiny_config(tmp_path: Path, **overrides) -> dict:
    config = {
        "recipe": "full",
        "model": {"name": "timm:test_convnext", "pretrained": False, "image_size": 32},
        "data": {"source": "sklearn_digits", "max_train_samples": 64, "max_eval_samples": 40},
        "optim": {"lr": 3e-3},
        "epochs": 2,
        "batch_size": 16,
        "augment": "none",
        "output_dir": str(tmp_path / "run"),
        "progress_bar": False,
    }
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return config


def text_csv(tmp_path: Path, n: int = 48) -> Path:
    words_pos = ["good", "great", "fun"]
    words_neg = ["bad", "awful", "dull"]
    rows = ["text,label"]
    for i in range(n):
        pos = i % 2 == 0
        word = (words_pos if pos else words_neg)[i % 3]
        rows.append(f"the movie was very {word},{'positive' if pos else 'negative'}")
    path = tmp_path / "reviews.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def free_port() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])
