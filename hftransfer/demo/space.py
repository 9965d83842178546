"""`hftransfer demo MODEL --write-space DIR`: a Hugging Face Space folder that runs the same app."""

from __future__ import annotations

import shutil
from pathlib import Path

from hftransfer._version import __version__
from hftransfer.errors import ConfigurationError
from hftransfer.utils.hub_ids import is_repo_id
from hftransfer.utils.io import atomic_directory


APP = '''"""Gradio Space written by `hftransfer demo --write-space`: the same app as `hftransfer demo`."""

from hftransfer.demo.app import build_app

build_app({model!r}, top_k={top_k}).launch()
'''

README = """---
title: {title}
emoji: 🔎
sdk: gradio
app_file: app.py
pinned: false
{models}tags:
- hftransfer
---

# {title}

Classifier demo written by `hftransfer demo --write-space` ({what}). Run it locally with
`pip install -r requirements.txt && python app.py`.
"""


def write_space(model: str, space_dir: str | Path, top_k: int = 3) -> Path:
    """Write `app.py`, `requirements.txt` and `README.md` (Space metadata, `models:` for a hub model) to `space_dir`.

    A hub model is referenced by id (the model page then lists the Space); a local folder is copied into the Space
    as `model/`."""
    source = Path(model)
    local = source.is_dir()
    if not local and not is_repo_id(model, namespaced=True):
        raise ConfigurationError(f"MODEL={model!r} is neither a folder nor a hub repo id (org/name); a Space needs "
                                 "one of them.")
    space_dir = Path(space_dir)
    if space_dir.exists() and any(space_dir.iterdir()) and not (space_dir / "app.py").is_file():
        raise ConfigurationError(f"--write-space {str(space_dir)!r} exists and is not a Space folder; pick a new "
                                 "folder.")
    extras = "export,demo" if local and (source / "model.onnx").is_file() else "demo"
    title = source.name if local else model.split("/")[-1]
    with atomic_directory(space_dir) as tmp:
        if local:
            shutil.copytree(source, tmp / "model")
        (tmp / "app.py").write_text(APP.format(model="model" if local else model, top_k=top_k), encoding="utf-8")
        (tmp / "requirements.txt").write_text(f"hftransfer[{extras}]=={__version__}\n", encoding="utf-8")
        (tmp / "README.md").write_text(README.format(
            title=title, models="" if local else f"models:\n- {model}\n",
            what="the model folder is copied into model/" if local else f"model {model} from the hub"),
            encoding="utf-8")
    return space_dir
