"""Tests for hftransfer.data: user data -> labelled train/validation `datasets.Dataset` splits, offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from hftransfer.data import (
    DataConfig,
    DataError,
    DataWarning,
    from_arrays,
    load_data,
    resolve_format,
    stratified_split,
    stratified_subsample,
)
from hftransfer.data import hub as hub_module


REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def hf_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf_home"
    monkeypatch.setenv("HF_HOME", str(cache))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache / "datasets"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache / "datasets")
    return cache


def save_image(path: Path, seed: int = 0, size: tuple[int, int] = (12, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def make_class_folders(root: Path, counts: dict[str, int], suffix: str = ".png") -> Path:
    for name, count in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            save_image(root / name / f"{name}_{i}{suffix}", seed=hash((name, i)) % 1000)
    return root


def truncated_jpeg(path: Path) -> Path:
    save_image(path, size=(64, 64))
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.7)])  # header intact, entropy-coded data cut off
    return path


def data_warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, DataWarning)]


def load_quietly(config: DataConfig, **kwargs):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        data = load_data(config, **kwargs)
    return data, data_warnings(record)


def column(split: datasets.Dataset, name: str) -> list:
    return split.with_format("arrow")[name].to_pylist()


def labels_of(split: datasets.Dataset) -> list[int]:
    return column(split, "label")


# ------------------------------------------------------------------------------------------------------ imagefolder


@pytest.mark.parametrize("val_name", ["val", "validation", "test"])
def test_imagefolder_split_folders(tmp_path, val_name):
    # train/ + val|validation|test/ become the two splits, with Image + ClassLabel features named after class folders
    make_class_folders(tmp_path / "data" / "train", {"bees": 3, "ants": 4})
    make_class_folders(tmp_path / "data" / val_name, {"bees": 2, "ants": 1})
    data, _ = load_quietly(DataConfig(source=str(tmp_path / "data")))
    assert data.label_names == ["ants", "bees"] and data.modality == "image"
    assert (len(data.train), len(data.validation)) == (7, 3)
    assert data.train.features["image"] == datasets.Image()
    assert (
        data.train.features["label"]
        == data.validation.features["label"]
        == datasets.ClassLabel(names=["ants", "bees"])
    )
    assert data.report.class_counts == {"train": {"ants": 4, "bees": 3}, "validation": {"ants": 1, "bees": 2}}
    assert data.description.validation_source == f"{val_name}/ folder" and data.description.name == "data"
    assert isinstance(data.train[0]["image"], Image.Image)


def test_imagefolder_flat_layout_stratified_split(tmp_path):
    # a flat <class>/ layout gets a stratified, seed-deterministic hold-out with every class in both splits
    make_class_folders(tmp_path / "flat", {"a": 10, "b": 10, "c": 4})
    config = DataConfig(source=str(tmp_path / "flat"), validation_split=0.25, seed=3)
    first, _ = load_quietly(config)
    again, _ = load_quietly(config)
    assert len(first.validation) == 6 and len(first.train) == 18
    assert all(first.report.class_counts["validation"][c] >= 1 for c in "abc")
    assert column(first.validation, "image") == column(again.validation, "image")  # same files, same order
    assert "stratified 25% of train (seed 3)" == first.description.validation_source


def test_imagefolder_corrupt_files_skipped_with_one_warning(tmp_path):
    # a text file named .jpg and a truncated JPEG are dropped with a single warning that counts and names them
    make_class_folders(tmp_path / "d" / "train", {"ants": 3, "bees": 3}, suffix=".jpg")
    make_class_folders(tmp_path / "d" / "val", {"ants": 1, "bees": 1}, suffix=".jpg")
    (tmp_path / "d" / "train" / "ants" / "notes.jpg").write_text("this is not an image")
    truncated_jpeg(tmp_path / "d" / "val" / "bees" / "cut.jpg")
    data, messages = load_quietly(DataConfig(source=str(tmp_path / "d")))
    skipped = [m for m in messages if m.startswith("skipped")]
    assert len(skipped) == 1 and "skipped 2 bad item(s)" in skipped[0] and "notes.jpg" in skipped[0]
    assert [(s.split, Path(s.item).name) for s in data.report.skipped] == [
        ("train", "notes.jpg"),
        ("validation", "cut.jpg"),
    ]
    assert (len(data.train), len(data.validation)) == (6, 2)
    assert all(isinstance(row["image"], Image.Image) for row in data.train)  # every kept file decodes


def test_imagefolder_verify_off_and_label_order(tmp_path):
    # verify_images=False skips the decode check (bad files stay); label_names fixes the class order
    root = make_class_folders(tmp_path / "d", {"ants": 4, "bees": 4})
    (root / "bees" / "bad.png").write_text("not a png")
    data, _ = load_quietly(DataConfig(source=str(root), verify_images=False, label_names=["bees", "ants"]))
    assert data.report.num_skipped == 0 and len(data.train) + len(data.validation) == 9
    assert data.label_names == ["bees", "ants"] and data.report.class_counts["train"]["bees"] >= 4
    with pytest.raises(DataError, match=r"label_names=\['bees', 'wasps'\] must list exactly"):
        load_data(DataConfig(source=str(root), label_names=["bees", "wasps"]))


def test_imagefolder_corrupt_file_error_names_it(tmp_path):
    # on_bad_data="error" raises and names the unreadable file
    root = make_class_folders(tmp_path / "data", {"ants": 3, "bees": 3}, suffix=".jpg")
    truncated_jpeg(root / "bees" / "cut.jpg")
    with pytest.raises(DataError, match=r"cut\.jpg.*on_bad_data='skip'"):
        load_data(DataConfig(source=str(root), on_bad_data="error"))


def test_imagefolder_empty_class_folder_is_an_error(tmp_path):
    # a class folder without images is an error that names the class
    root = make_class_folders(tmp_path / "data", {"ants": 3})
    (root / "bees").mkdir()
    (root / "bees" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"\['bees'\]"):
        load_data(DataConfig(source=str(root)))


def test_imagefolder_validation_class_not_in_train(tmp_path):
    # a validation class folder with no training counterpart is an error naming it
    make_class_folders(tmp_path / "d" / "train", {"ants": 2, "bees": 2})
    make_class_folders(tmp_path / "d" / "val", {"ants": 1, "wasps": 1})
    with pytest.raises(DataError, match="wasps"):
        load_data(DataConfig(source=str(tmp_path / "d")))


def test_imagefolder_ignores_hidden_and_non_image_files(tmp_path):
    # .ipynb_checkpoints, .DS_Store and non-image suffixes are not classes or samples; stray top-level images warn
    root = make_class_folders(tmp_path / "d", {"ants": 3, "bees": 3})
    save_image(root / ".ipynb_checkpoints" / "x.png")
    (root / "ants" / ".DS_Store").write_bytes(b"\0\1")
    (root / "ants" / "labels.csv").write_text("a,b\n")
    save_image(root / "stray.png")
    data, messages = load_quietly(DataConfig(source=str(root), validation_split=0.34))
    assert data.label_names == ["ants", "bees"] and len(data.train) + len(data.validation) == 6
    assert any("directly in" in m for m in messages)


def test_imagefolder_zero_train_images_after_skipping(tmp_path):
    # a class whose only training images are corrupt ends with zero training samples: an error naming it
    root = make_class_folders(tmp_path / "d", {"ants": 3})
    (root / "bees").mkdir()
    (root / "bees" / "bad.png").write_text("not a png")
    with pytest.raises(DataError, match=r"\['bees'\] have no training samples"):
        load_quietly(DataConfig(source=str(root)))


# ---------------------------------------------------------------------------------------------------- CSV / JSON


def write_csv(path: Path, rows: list[tuple], columns=("text", "label")) -> Path:
    pd.DataFrame(rows, columns=list(columns)).to_csv(path, index=False)
    return path


def test_csv_string_labels_with_validation_file(tmp_path):
    # string labels become sorted ClassLabel names shared by train and the explicit validation file
    train = write_csv(tmp_path / "tr.csv", [("good movie", "pos"), ("bad movie", "neg"), ("fine", "neutral")] * 3)
    val = write_csv(tmp_path / "va.csv", [("great", "pos"), ("awful", "neg")])
    data, _ = load_quietly(DataConfig(train=str(train), validation=str(val)))
    assert data.modality == "text" and data.label_names == ["neg", "neutral", "pos"]
    assert data.train.features == datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "neutral", "pos"])}
    )
    assert data.validation[0] == {"text": "great", "label": 2} and len(data.train) == 9


def test_csv_integer_labels_and_na_like_text(tmp_path):
    # integer labels are named str(int) in numeric order and remapped to 0..K-1; "NA"/"None" stay texts
    rows = [("NA", -1), ("None", 10), ("null", 2), ("ok", 2), ("meh", -1), ("wow", 10)] * 2
    data, _ = load_quietly(DataConfig(source=str(write_csv(tmp_path / "d.csv", rows)), validation_split=0.5))
    assert data.label_names == ["-1", "2", "10"]
    texts = dict(
        zip(
            column(data.train, "text") + column(data.validation, "text"),
            labels_of(data.train) + labels_of(data.validation),
        )
    )
    assert texts["NA"] == 0 and texts["None"] == 2 and texts["ok"] == 1


def test_csv_label_names_for_integer_ids(tmp_path):
    # DataConfig.label_names names integer ids 0..K-1; an id out of range is an error
    path = write_csv(tmp_path / "d.csv", [("a", 0), ("b", 1)] * 4)
    data, _ = load_quietly(DataConfig(source=str(path), label_names=["negative", "positive"], validation_split=0.5))
    assert data.train.features["label"].names == ["negative", "positive"]
    with pytest.raises(DataError, match="out of range"):
        load_data(DataConfig(source=str(path), label_names=["only"]))


def test_csv_missing_column_lists_available_columns(tmp_path):
    # a wrong text_column names the available columns and the config key to set
    path = write_csv(tmp_path / "d.csv", [("a", 0), ("b", 1)], columns=("sentence", "label"))
    with pytest.raises(DataError, match=r"text_column='text'.*\['sentence', 'label'\].*text_column=\.\.\."):
        load_data(DataConfig(source=str(path)))
    with pytest.raises(DataError, match=r"label_column='y'"):
        load_data(DataConfig(source=str(path), text_column="sentence", label_column="y"))


def test_csv_empty_text_and_missing_label_rows(tmp_path):
    # empty/blank text and missing labels are skipped with a count, or raise under on_bad_data="error"
    path = tmp_path / "d.csv"
    path.write_text("text,label\ngood,1\n,0\n   ,1\nbad,\nok,0\nfine,1\nmeh,0\nyes,1\nno,0\n")
    data, messages = load_quietly(DataConfig(source=str(path), validation_split=0.3))
    assert data.report.num_skipped == 3 and len(data.train) + len(data.validation) == 6
    assert {s.reason for s in data.report.skipped} == {"empty text", "missing label"}
    assert any("skipped 3 bad item(s)" in m for m in messages)
    with pytest.raises(DataError, match=r"d\.csv row 1.*empty text"):
        load_data(DataConfig(source=str(path), on_bad_data="error"))


def test_csv_validation_label_unseen_in_train(tmp_path):
    # a validation label with no training rows is an error that names it
    train = write_csv(tmp_path / "train.csv", [("a", "x"), ("b", "y")] * 2)
    write_csv(tmp_path / "dev.csv", [("c", "x"), ("d", "zebra")])
    with pytest.raises(DataError, match="zebra"):
        load_data(DataConfig(source=str(tmp_path)))
    assert resolve_format(DataConfig(source=str(tmp_path))) == "csv" and train.exists()


def test_table_folder_discovers_split_files(tmp_path):
    # a folder with train.tsv + dev.tsv loads as train/validation (tab-separated because of the suffix)
    pd.DataFrame({"text": ["a", "b", "c", "d"], "label": [0, 1, 0, 1]}).to_csv(
        tmp_path / "train.tsv", sep="\t", index=False
    )
    pd.DataFrame({"text": ["e", "f"], "label": [1, 0]}).to_csv(tmp_path / "dev.tsv", sep="\t", index=False)
    data, _ = load_quietly(DataConfig(source=str(tmp_path)))
    assert (len(data.train), len(data.validation)) == (4, 2) and data.description.validation_source == "dev.tsv"
    assert data.description.name == tmp_path.name


@pytest.mark.parametrize("layout", ["jsonl", "records", "data_field", "columns"])
def test_json_layouts(tmp_path, layout):
    # JSON Lines, a list of records, {"data": [...]} and {"column": [...]} all read as tables
    records = [{"review": f"text {i}", "stars": "good" if i % 2 else "bad"} for i in range(8)]
    path = tmp_path / ("d.jsonl" if layout == "jsonl" else "d.json")
    content = {
        "jsonl": "\n".join(json.dumps(r) for r in records),
        "records": json.dumps(records),
        "data_field": json.dumps({"data": records}),
        "columns": json.dumps({k: [r[k] for r in records] for k in records[0]}),
    }[layout]
    path.write_text(content)
    data, _ = load_quietly(DataConfig(source=str(path), text_column="review", label_column="stars"))
    assert data.label_names == ["bad", "good"] and len(data.train) + len(data.validation) == 8


def test_sentence_pairs_and_parquet(tmp_path):
    # two text columns give `text` + `text_pair`; parquet files read like CSV
    frame = pd.DataFrame({"q": ["a", "b", "c", "d"] * 2, "p": ["w", "x", "y", "z"] * 2, "label": [0, 1] * 4})
    frame.to_parquet(tmp_path / "pairs.parquet")
    data, _ = load_quietly(
        DataConfig(source=str(tmp_path / "pairs.parquet"), text_column=["q", "p"], validation_split=0.5)
    )
    assert list(data.train.features) == ["text", "text_pair", "label"]
    assert data.description.kind == "parquet"


# ------------------------------------------------------------------------------------------------------------ hub


@pytest.mark.integration
def test_hub_unknown_id_offline_fails_fast_in_subprocess(tmp_path):
    # with HF_HUB_OFFLINE=1 an unknown hub id fails within seconds, naming the id and HF_HUB_OFFLINE
    script = textwrap.dedent(
        """
        import json, time
        from hftransfer.data import DataConfig, DataError, load_data
        start = time.time()
        try:
            load_data(DataConfig(source="no-such-org/no-such-dataset"))
            print(json.dumps({"error": None}))
        except DataError as err:
            print(json.dumps({"error": str(err), "seconds": time.time() - start}))
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["error"] and "no-such-org/no-such-dataset" in outcome["error"]
    assert "HF_HUB_OFFLINE" in outcome["error"] and outcome["seconds"] < 5


def test_hub_unreachable_fails_fast_without_retries(monkeypatch):
    # when the hub endpoint is unreachable the error comes at once (no retry loop) and says what to do
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_module, "hub_reachable", lambda endpoint, timeout=3.0: False)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("load_dataset must not be called"))
    start = time.time()
    with pytest.raises(DataError, match=r"'someone/thing'.*unreachable.*HF_HUB_OFFLINE"):
        load_data(DataConfig(source="someone/thing"))
    assert time.time() - start < 2


def fake_hub(monkeypatch, splits: dict[str, datasets.Dataset]) -> None:
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_module, "hub_reachable", lambda endpoint, timeout=3.0: True)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: datasets.DatasetDict(splits))


def test_hub_image_dataset_columns_and_validation_split(monkeypatch):
    # hub image data: image_column/label_column renamed to image/label, ClassLabel names kept, "validation" preferred
    features = datasets.Features({"img": datasets.Image(), "fine": datasets.ClassLabel(names=["cat", "dog", "eel"])})
    pixels = np.zeros((6, 4, 4, 3), np.uint8)

    def split(labels):
        return datasets.Dataset.from_dict({"img": list(pixels[: len(labels)]), "fine": labels}, features=features)

    fake_hub(monkeypatch, {"train": split([0, 1, 2, 0, 1, 2]), "validation": split([2, 1, -1]), "test": split([0])})
    data, messages = load_quietly(DataConfig(source="org/pets", image_column="img", label_column="fine"))
    assert data.label_names == ["cat", "dog", "eel"] and list(data.train.features) == ["image", "label"]
    assert labels_of(data.validation) == [2, 1] and data.report.num_skipped == 1  # -1 means "no label"
    assert data.description.kind == "hub" and data.description.validation_source == "'validation' split"
    assert isinstance(data.train[0]["image"], Image.Image)


def test_hub_text_dataset_unlabelled_test_split(monkeypatch):
    # an auto-detected split without labels (GLUE test style) is not used: part of train is held out instead
    features = datasets.Features(
        {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    train = datasets.Dataset.from_dict(
        {"sentence": [f"s{i}" for i in range(10)], "label": [0, 1] * 5}, features=features
    )
    test = datasets.Dataset.from_dict({"sentence": ["t"] * 3, "label": [-1] * 3}, features=features)
    fake_hub(monkeypatch, {"train": train, "test": test})
    data, messages = load_quietly(
        DataConfig(source="glue", format="hub", text_column="sentence", validation_split=0.2)
    )
    assert (len(data.train), len(data.validation)) == (8, 2) and data.label_names == ["neg", "pos"]
    assert any("has no labels" in m for m in messages)
    with pytest.raises(DataError, match=r"train_split='training'.*\['train', 'test'\]"):
        load_data(DataConfig(source="glue", format="hub", train_split="training"))


# --------------------------------------------------------------------------------------------------------- arrays


def test_from_arrays_uint8_and_float_images():
    # uint8 (N,H,W) and float (N,H,W,3) in [0,1] become PNG-backed Image rows with the given label names
    gray = np.arange(20 * 5 * 5, dtype=np.uint8).reshape(20, 5, 5)
    data = from_arrays(gray, [0, 1] * 10, label_names=["off", "on"], validation_split=0.2)
    assert data.label_names == ["off", "on"] and (len(data.train), len(data.validation)) == (16, 4)
    image = data.train[0]["image"]
    assert image.mode == "L" and image.size == (5, 5)
    np.testing.assert_array_equal(np.asarray(image), gray[data.train.with_format("arrow")["label"].to_numpy()[0] * 0])
    rgb = np.random.default_rng(0).random((10, 4, 6, 3))
    data = from_arrays(rgb, np.array([3, 7] * 5), x_val=rgb[:4], y_val=[3, 7, 3, 7])
    assert data.label_names == ["3", "7"] and data.train[0]["image"].size == (6, 4)
    np.testing.assert_array_equal(np.asarray(data.validation[0]["image"]), np.rint(rgb[0] * 255).astype(np.uint8))


def test_from_arrays_errors():
    # mismatched lengths name both lengths; out-of-range floats and channels-first shapes explain the fix
    with pytest.raises(DataError, match=r"x has 4 rows but y has 3 labels"):
        from_arrays(np.zeros((4, 3, 3), np.uint8), [0, 1, 0])
    with pytest.raises(DataError, match=r"\[0, 255\].*\[0, 1\]"):
        from_arrays(np.linspace(0, 255, 36).reshape(4, 3, 3), [0, 1, 0, 1])
    with pytest.raises(DataError, match="channels first"):
        from_arrays(np.zeros((4, 3, 8, 8), np.uint8), [0, 1, 0, 1])
    with pytest.raises(DataError, match="x_val and y_val"):
        from_arrays(np.zeros((4, 3, 3), np.uint8), [0, 1, 0, 1], x_val=np.zeros((2, 3, 3), np.uint8))


def test_from_arrays_takes_a_held_out_test_split_matched_by_class_name():
    # x_test/y_test: labels matched to the training classes (integers through label_names, or names), counted in the
    # report; a class missing from the test split is fine; unknown names, half a pair, other modality are refused
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (40, 6, 6), dtype=np.uint8)
    data = from_arrays(x, [0, 1, 2, 3] * 10, label_names=list("abcd"), x_test=x[:6], y_test=[3, 3, 1, 1, 0, 0])
    assert data.test.with_format("arrow")["label"].to_pylist() == [3, 3, 1, 1, 0, 0]
    assert data.test.features["label"].names == data.label_names == list("abcd")
    assert data.report.num_rows["test"] == 6 and data.report.class_counts["test"] == {"a": 2, "b": 2, "c": 0, "d": 2}
    np.testing.assert_array_equal(np.asarray(data.test[0]["image"]), x[0])
    texts = ["good one", "bad one"] * 10
    data = from_arrays(texts, ["pos", "neg"] * 10, x_test=["meh", "fine", "awful"], y_test=["neg", "pos", "neg"])
    assert data.label_names == ["neg", "pos"] and data.test.with_format("arrow")["label"].to_pylist() == [0, 1, 0]
    with pytest.raises(DataError, match=r"y_test.*\['mid'\].*not among"):
        from_arrays(texts, ["pos", "neg"] * 10, x_test=["a", "b"], y_test=["neg", "mid"])
    with pytest.raises(DataError, match="x_test and y_test go together"):
        from_arrays(texts, ["pos", "neg"] * 10, x_test=["a", "b"])
    with pytest.raises(DataError, match="x_test is image data but x is text"):
        from_arrays(texts, ["pos", "neg"] * 10, x_test=x[:2], y_test=["pos", "neg"])


def test_from_arrays_texts():
    # a list of strings is text data; empty strings are skipped and counted
    texts = ["good", "bad", "", "great", "awful", "nice", "poor", "fine"]
    with pytest.warns(DataWarning, match="skipped 1"):
        data = from_arrays(texts, ["p", "n", "p", "p", "n", "p", "n", "p"], validation_split=0.3)
    assert data.modality == "text" and data.label_names == ["n", "p"] and data.report.num_skipped == 1
    assert len(data.train) + len(data.validation) == 7


def test_arrays_through_load_data_and_npz(tmp_path):
    # load_data(format="arrays") takes a tuple, and an .npz with x_train/y_train/x_test/y_test/class_names loads too
    x = np.zeros((8, 2, 2), np.uint8)
    data, _ = load_quietly(DataConfig(format="arrays", validation_split=0.5), arrays=(x, [0, 1] * 4))
    assert len(data.validation) == 4
    np.savez(
        tmp_path / "d.npz",
        x_train=x,
        y_train=np.array([0, 1] * 4),
        x_test=x[:2],
        y_test=np.array([1, 0]),
        class_names=np.array(["a", "b"]),
    )
    data, _ = load_quietly(DataConfig(source=str(tmp_path / "d.npz")))
    assert data.label_names == ["a", "b"] and (len(data.train), len(data.validation)) == (8, 2)
    assert data.description.kind == "npz"


def test_sklearn_digits_builtin():
    # the builtin demo: 1797 8x8 grayscale digits, pixels scaled 0..16 -> 0..255, ten classes "0".."9"
    data, _ = load_quietly(DataConfig(source="sklearn_digits"))
    assert data.label_names == [str(i) for i in range(10)] and data.modality == "image"
    assert len(data.train) + len(data.validation) == 1797 and len(data.validation) == 270
    pixels = np.stack([np.asarray(row["image"]) for row in data.train.select(range(50))])
    assert pixels.shape == (50, 8, 8) and pixels.dtype == np.uint8 and pixels.max() == 255
    assert data.description.name == "sklearn_digits"


# ------------------------------------------------------------------------------------------ split and subsampling


def test_stratified_split_is_deterministic_and_keeps_every_class():
    # same seed -> same split; proportions kept; a single-sample class stays in train
    labels = np.array([0] * 50 + [1] * 30 + [2] * 3 + [3])
    train, val = stratified_split(labels, 0.2, seed=1)
    again_train, again_val = stratified_split(labels, 0.2, seed=1)
    np.testing.assert_array_equal(val, again_val)
    assert not np.array_equal(val, stratified_split(labels, 0.2, seed=2)[1])
    assert len(val) == round(0.2 * len(labels)) and len(np.intersect1d(train, val)) == 0
    assert np.bincount(labels[val], minlength=4).tolist() == [10, 6, 1, 0] and 83 in train


def test_single_sample_class_warns():
    # a class with a single sample is kept in train with warnings (single sample, absent from validation)
    x = np.zeros((11, 2, 2), np.uint8)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        data = from_arrays(x, ["common"] * 10 + ["rare"], validation_split=0.3)
    messages = data_warnings(record)
    assert any("['rare'] have a single training sample" in m for m in messages)
    assert any("['rare'] have no validation samples" in m for m in messages)
    assert data.report.class_counts["train"]["rare"] == 1 and data.report.class_counts["validation"]["rare"] == 0


def test_max_samples_stratified_subsample():
    # max_train_samples/max_eval_samples subsample per class, deterministically, keeping every class
    x = np.zeros((200, 2, 2), np.uint8)
    y = np.array([0] * 150 + [1] * 45 + [2] * 5)
    with pytest.warns(DataWarning, match=r"\['2'\] have a single training sample"):  # 4 of 5 in train, 1 kept
        first = from_arrays(x, y, max_train_samples=40, max_eval_samples=10, seed=7)
        second = from_arrays(x, y, max_train_samples=40, max_eval_samples=10, seed=7)
    assert (len(first.train), len(first.validation)) == (40, 10)
    assert all(n >= 1 for n in first.report.class_counts["train"].values())
    assert first.report.class_counts["train"]["0"] == 30
    assert labels_of(first.train) == labels_of(second.train)
    assert stratified_subsample(y, 3, seed=0).tolist() == sorted(stratified_subsample(y, 3, seed=0).tolist())
    with pytest.raises(DataError, match="max_train_samples=2 is below the number of classes"):
        from_arrays(x, y, max_train_samples=2)


def test_class_without_training_samples_is_an_error():
    # a named class with no training rows (e.g. label_names longer than the data) is an error naming it
    with pytest.raises(DataError, match=r"\['c'\] have no training samples"):
        from_arrays(np.zeros((6, 2, 2), np.uint8), [0, 1] * 3, label_names=["a", "b", "c"], validation_split=0.4)


# ------------------------------------------------------------------------------------------- config and dispatch


def test_auto_format_resolution(tmp_path):
    # format="auto" picks the loader from folders, suffixes, builtin names and org/name hub ids
    make_class_folders(tmp_path / "imgs", {"a": 1})
    write_csv(tmp_path / "t.csv", [("a", 0)])
    assert resolve_format(DataConfig(source=str(tmp_path / "imgs"))) == "imagefolder"
    assert resolve_format(DataConfig(source=str(tmp_path / "t.csv"))) == "csv"
    assert resolve_format(DataConfig(source="sklearn_digits")) == "sklearn_digits"
    assert resolve_format(DataConfig(source="uoft-cs/cifar10")) == "hub"
    with pytest.raises(DataError, match=r"source='nowhere' is not an existing path"):
        resolve_format(DataConfig(source="nowhere"))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"format": "xml"}, r"format='xml'"),
        ({"on_bad_data": "ignore"}, r"on_bad_data='ignore'"),
        ({"validation_split": 1.5}, r"validation_split=1\.5"),
        ({"max_train_samples": 0}, r"max_train_samples=0"),
        ({"text_column": ["a", "b", "c"]}, r"text_column="),
    ],
)
def test_config_rejects_bad_values(kwargs, match):
    # DataConfig names the bad argument and its value
    with pytest.raises(DataError, match=match):
        DataConfig(source="sklearn_digits", **kwargs)


# ---------------------------------------------------------------------------------------- integration (real data)


def shared(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is not available")
    return path


@pytest.mark.integration
def test_hymenoptera_image_folder():
    # the real hymenoptera folder: 245 train / 153 val, labels ants, bees
    data, _ = load_quietly(DataConfig(source=str(shared("hymenoptera"))))
    assert (len(data.train), len(data.validation)) == (245, 153) and data.label_names == ["ants", "bees"]
    assert data.report.num_skipped == 0 and data.description.name == "hymenoptera"


@pytest.mark.integration
def test_sst2_csv_fast():
    # SST-2: dev.csv alone is 872 rows with 2 classes; train.csv + dev.csv (67k rows) load within seconds
    data, _ = load_quietly(DataConfig(source=str(shared("sst2", "dev.csv"))))
    assert len(data.train) + len(data.validation) == 872 and data.label_names == ["0", "1"]
    start = time.time()
    data, _ = load_quietly(DataConfig(source=str(shared("sst2"))))
    assert time.time() - start < 5
    assert (len(data.train), len(data.validation)) == (67349, 872)
    assert data.report.class_counts["validation"] == {"0": 428, "1": 444}


@pytest.mark.integration
def test_cifar10_npz_from_arrays():
    # the CIFAR-10 subset arrays: 5000 train / 2000 val, ten named classes, 32x32 RGB images
    with np.load(shared("cifar10_subset", "cifar10_subset.npz")) as npz:
        data = from_arrays(
            npz["x_train"], npz["y_train"], npz["class_names"], npz["x_test"], npz["y_test"], name="cifar10"
        )
    assert (len(data.train), len(data.validation)) == (5000, 2000) and data.label_names[0] == "airplane"
    assert data.train[0]["image"].size == (32, 32) and data.report.class_counts["train"]["truck"] == 500
