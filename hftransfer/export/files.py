"""What an export folder holds and the small files written beside `model.onnx` (labels, preprocessing, README)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hftransfer.utils.io import read_json, write_json


ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
LABELS_FILE = "labels.json"  # {"id2label": {"0": name}, "label2id": {name: 0}}
PREPROCESSOR_FILE = "preprocessor.json"  # AutoTransfer.preprocessor.to_dict(): image data config or text max_length
PARITY_FILE = "parity.json"
EXPORT_FILE = "export.json"  # provenance: source model, method, merged, exporter, opset, input/output names


def is_export_folder(path: str | Path) -> bool:
    """True for a folder written by `hftransfer export` (it holds `model.onnx` and `labels.json`)."""
    folder = Path(path)
    return (folder / ONNX_FILE).is_file() and (folder / LABELS_FILE).is_file()


def write_labels(folder: Path, id2label: dict[int, str]) -> None:
    write_json(folder / LABELS_FILE, {"id2label": {str(k): v for k, v in id2label.items()},
                                      "label2id": {v: int(k) for k, v in id2label.items()}})


def read_labels(folder: Path) -> dict[int, str]:
    return {int(k): str(v) for k, v in read_json(folder / LABELS_FILE)["id2label"].items()}


def write_sidecar(folder: Path, model: Any) -> None:
    """Labels, the preprocessing description (plus tokenizer files for text) and a README with an ORT snippet."""
    write_labels(folder, model.id2label)
    preprocessing = model.preprocessor.to_dict()
    write_json(folder / PREPROCESSOR_FILE, preprocessing)
    if model.modality == "text":
        model.preprocessor.tokenizer.save_pretrained(folder)
    (folder / "README.md").write_text(readme(model, preprocessing), encoding="utf-8")


_IMAGE_SNIPPET = '''```python
import json

import numpy as np
import onnxruntime as ort
from PIL import Image

folder = "{folder}"
cfg = json.load(open(f"{{folder}}/preprocessor.json"))["data_config"]
id2label = json.load(open(f"{{folder}}/labels.json"))["id2label"]
session = ort.InferenceSession(f"{{folder}}/model.onnx", providers=["CPUExecutionProvider"])

def preprocess(image):  # resize the short side to size / crop_pct, center crop, scale to [0, 1], normalise
    size = cfg["input_size"][-1]
    resample = {{"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}}[cfg["interpolation"]]
    scale = int(size / cfg["crop_pct"])
    w, h = image.size
    image = image.convert("RGB").resize((scale, int(scale * h / w)) if w <= h else (int(scale * w / h), scale),
                                        resample)
    left, top = int(round((image.width - size) / 2.0)), int(round((image.height - size) / 2.0))
    x = np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0
    x = (x - np.array(cfg["mean"], dtype=np.float32)) / np.array(cfg["std"], dtype=np.float32)
    return x.transpose(2, 0, 1)

images = [Image.open("{example}")]
logits = session.run(["logits"], {{"pixel_values": np.stack([preprocess(im) for im in images])}})[0]
print([id2label[str(i)] for i in logits.argmax(-1)])
```'''

_TEXT_SNIPPET = '''```python
import json

import onnxruntime as ort
from transformers import AutoTokenizer

folder = "{folder}"
max_length = json.load(open(f"{{folder}}/preprocessor.json"))["max_length"]
id2label = json.load(open(f"{{folder}}/labels.json"))["id2label"]
tokenizer = AutoTokenizer.from_pretrained(folder)
session = ort.InferenceSession(f"{{folder}}/model.onnx", providers=["CPUExecutionProvider"])

batch = tokenizer(["{example}"], padding=True, truncation=True, max_length=max_length, return_tensors="np")
logits = session.run(["logits"], {{i.name: batch[i.name] for i in session.get_inputs()}})[0]
print([id2label[str(i)] for i in logits.argmax(-1)])
```'''


def readme(model: Any, preprocessing: dict[str, Any], folder: str = ".") -> str:
    """A short README: what the folder holds and a runnable onnxruntime snippet."""
    image = model.modality == "image"
    snippet = (_IMAGE_SNIPPET if image else _TEXT_SNIPPET).format(
        folder=folder, example="image.jpg" if image else "a sentence to classify")
    inputs = ("`pixel_values` float32 (batch, 3, H, W)" if image else
              "`input_ids`, `attention_mask` (and `token_type_ids` where the model uses them) int64 (batch, sequence)")
    labels = ", ".join(model.id2label[i] for i in sorted(model.id2label)[:10])
    more = ", ..." if model.num_labels > 10 else ""
    return (
        "# ONNX export (hftransfer)\n\n"
        f"Classifier with {model.num_labels} labels ({labels}{more}), exported by `hftransfer export`.\n\n"
        f"- `{ONNX_FILE}`: fp32 graph; inputs {inputs} with a dynamic batch axis"
        f"{'' if image else ' and sequence axis'}; output `logits` (batch, num_labels).\n"
        f"- `{PREPROCESSOR_FILE}`: the preprocessing the model was trained with"
        f"{' (size, crop_pct, mean/std, interpolation)' if image else ' (max_length); tokenizer files beside it'}.\n"
        f"- `{LABELS_FILE}`: the label map. `{PARITY_FILE}`: the parity check against PyTorch at export time.\n"
        f"- `{INT8_FILE}` (when exported with `--quantize int8`): dynamic int8 quantisation.\n\n"
        "Run it with the same preprocessing as training: `hftransfer predict THIS_FOLDER INPUT... --backend onnx`, "
        "or with onnxruntime alone:\n\n" + snippet + "\n\n"
        "Preprocessing settings:\n\n```json\n" + json.dumps(preprocessing, indent=2, sort_keys=True) + "\n```\n"
    )
