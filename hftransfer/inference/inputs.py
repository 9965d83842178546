"""What `hftransfer predict` reads: files, image folders, CSV/JSONL/Parquet tables, text files and stdin lines.

Every input becomes one `InputRow`; a row that cannot be read carries an `error` instead of failing the run.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from PIL import Image, UnidentifiedImageError

from hftransfer.data.errors import DataError
from hftransfer.data.images import IMAGE_EXTENSIONS, image_files
from hftransfer.data.tables import TABLE_SUFFIXES, check_columns, read_table


@dataclass
class InputRow:
    """One thing to classify: `value` is an image path or a text; `error` is set when it cannot be used."""

    source: str  # shown in the output: a path, "<file> row <i>" or "stdin line <i>" or the text itself
    value: Any = None
    error: str | None = None


def collect_inputs(
    inputs: Sequence[str], modality: str, text_column: str = "text", image_column: str = "image",
    stdin: TextIO | None = None,
) -> list[InputRow]:
    """Expand the INPUT arguments into rows. Arguments that cannot be read at all raise before any prediction."""
    if not inputs:
        raise DataError("INPUT is empty: give files, a folder, a CSV/JSONL/Parquet file or '-' for stdin lines.")
    rows: list[InputRow] = []
    for item in inputs:
        rows += _expand(str(item), modality, text_column, image_column, stdin)
    return rows


def _expand(item: str, modality: str, text_column: str, image_column: str, stdin: TextIO | None) -> list[InputRow]:
    if item == "-":
        lines = (stdin or sys.stdin).read().splitlines()
        return _lines(lines, "stdin", modality, Path.cwd())
    path = Path(item).expanduser()
    if path.is_dir():
        if modality != "image":
            looks = " of images" if image_files(path) else ""
            raise DataError(f"INPUT {item!r} is a folder{looks}, but the model is a text model: it reads sentences, "
                            "a CSV/JSONL/Parquet/text file or '-' (stdin lines). Pass texts, or use an image model.")
        files = image_files(path)
        if not files:
            raise DataError(f"INPUT {item!r} holds no image files (suffixes {sorted(IMAGE_EXTENSIONS)[:6]}...).")
        return [InputRow(str(f), f) for f in files]
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in TABLE_SUFFIXES:
            return _table(path, modality, text_column, image_column)
        if modality == "text" and suffix in IMAGE_EXTENSIONS:
            raise DataError(_IMAGE_FOR_TEXT_MODEL.format(item=item))
        if modality == "text" or suffix == ".txt":
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except (UnicodeDecodeError, OSError) as err:
                if modality == "text" and _is_image_file(path):
                    raise DataError(_IMAGE_FOR_TEXT_MODEL.format(item=item)) from err
                raise DataError(f"INPUT {item!r} could not be read as UTF-8 text lines: {err}.") from err
            return _lines(lines, path.name, modality, path.parent)
        return [InputRow(str(path), path)]
    if modality == "image" and not Path(item).suffix and " " in item.strip():
        raise DataError(f"INPUT {item!r} looks like a sentence, but the model is an image model: it reads image "
                        "files, folders of images or a table with an image column. Pass images, or use a text model.")
    if modality == "image" or Path(item).suffix.lower() in {*TABLE_SUFFIXES, ".txt", *IMAGE_EXTENSIONS}:
        raise DataError(f"INPUT {item!r} does not exist (relative to {Path.cwd()}); pass an existing file or folder.")
    return [InputRow(item, item)]  # a sentence given on the command line


_IMAGE_FOR_TEXT_MODEL = ("INPUT {item!r} looks like an image, but the model is a text model: it classifies "
                         "sentences. Pass texts (or a .txt/CSV/JSONL file of them), or use an image model.")


def _is_image_file(path: Path) -> bool:
    """Whether the file's content is an image PIL recognises (whatever its name)."""
    try:
        with Image.open(path):
            return True
    except (UnidentifiedImageError, OSError, ValueError):
        return False


def _lines(lines: Iterable[str], where: str, modality: str, base: Path) -> list[InputRow]:
    rows = []
    for i, line in enumerate(lines, start=1):
        text = line.strip()
        source = f"{where} line {i}"
        if not text:
            rows.append(InputRow(source, error="empty line"))
        elif modality == "image":
            rows.append(InputRow(text, base / Path(text).expanduser()))
        else:
            rows.append(InputRow(text, text))
    return rows


def _table(path: Path, modality: str, text_column: str, image_column: str) -> list[InputRow]:
    frame = read_table(path, TABLE_SUFFIXES[path.suffix.lower()])
    column, flag = (text_column, "--text-column") if modality == "text" else (image_column, "--image-column")
    check_columns(list(frame.columns), {column: flag.lstrip("-").replace("-", "_")}, path.name)
    rows = []
    for i, value in enumerate(frame[column].tolist()):
        source = f"{path.name} row {i}"
        if value is None or (isinstance(value, float) and math.isnan(value)) or not str(value).strip():
            rows.append(InputRow(source, error=f"empty {column}"))
        elif modality == "image":
            rows.append(InputRow(str(value), path.parent / Path(str(value)).expanduser()))
        else:
            rows.append(InputRow(str(value), str(value)))
    return rows


def open_image(path: Path) -> tuple[Any, str | None]:
    """(RGB image, None) or (None, reason) for a missing or corrupt file."""
    if not Path(path).is_file():
        return None, f"missing file {str(path)!r}"
    try:
        with Image.open(path) as image:
            return image.convert("RGB"), None
    except Exception as err:  # noqa: BLE001  (PIL raises OSError, SyntaxError, ValueError, DecompressionBombError)
        return None, f"cannot read image {str(path)!r}: {type(err).__name__}: {err}"
