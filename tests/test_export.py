"""`hftransfer export` (ONNX + parity check + int8) and `predict --backend onnx` on tiny random models."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import hftransfer
from hftransfer import AutoTransfer
from hftransfer.export import ExportError, ExportWarning, OnnxClassifier, ParityError
from hftransfer.export import api as export_api
from hftransfer.inference import predict_file

from helpers import text_csv, tiny_config


LABELS = {0: "negative", 1: "positive"}
# (case id, model key, method, method config): every kind of graph the exporter must handle.
CASES = [
    ("timm_cnn", "timm_cnn", "full", None),
    ("timm_vit_vpt", "timm_vit", "vpt", {"num_tokens": 3, "deep": True}),
    ("transformers_vit", "transformers_vit", "full", None),
    ("bert_plain", "transformers_bert", "full", None),
    ("bert_lora_merged", "transformers_bert", "lora", None),
    ("bert_adapter", "transformers_bert", "adapter", None),
    ("bert_prefix_tuning", "transformers_bert", "prefix_tuning", {"num_virtual_tokens": 4}),
    ("bert_prefix_key_value", "transformers_bert", "prefix_tuning", {"num_virtual_tokens": 4, "form": "key_value"}),
]


def saved_model(tiny_models, tmp_path: Path, key: str, method: str = "full", config: dict | None = None) -> Path:
    """A tiny model with every trained parameter moved off its init (zero-init adapters would export trivially)."""
    torch.manual_seed(0)
    pretrained = {} if key.startswith("transformers") else {"pretrained": False}
    model = AutoTransfer.from_pretrained(tiny_models[key], id2label=LABELS, method=method, method_config=config,
                                         **pretrained)
    if key == "timm_cnn":  # a CNN runs at any size: 64 px keeps the test fast
        model.backbone.preprocessor = model.preprocessor.with_image_size(64)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * 0.2)
    return model.save_pretrained(tmp_path / f"{key}-{method}", full_weights=True)


def image_files(folder: Path, n: int = 5) -> list[str]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"im{i}.png"
        Image.fromarray(rng.integers(0, 256, (40 + 7 * i, 36, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def initializer_names(path: Path) -> set[str]:
    return {t.name for t in onnx.load(str(path)).graph.initializer}


@pytest.mark.parametrize(("case", "key", "method", "config"), CASES, ids=[c[0] for c in CASES])
def test_every_kind_of_model_exports_and_passes_parity(tiny_models, tmp_path, case, key, method, config):
    folder = saved_model(tiny_models, tmp_path, key, method, config)
    text = key == "transformers_bert"
    if text:  # real labelled rows: parity also reports both accuracies
        result = hftransfer.export(folder, tmp_path / "out", data=text_csv(tmp_path), num_samples=20)
    else:
        with pytest.warns(ExportWarning, match="synthetic inputs"):
            result = hftransfer.export(folder, tmp_path / "out", num_samples=6)
    parity = json.loads((tmp_path / "out" / "parity.json").read_text())
    assert parity == result.parity and parity["passed"] is True
    assert parity["onnx"]["max_abs_logit_diff"] <= 1e-4 and parity["onnx"]["top1_agreement"] == 1.0
    assert parity["inputs"]["source"] == ("data" if text else "synthetic")
    assert parity["inputs"]["num_samples"] == (20 if text else 6)
    if text:
        assert parity["onnx"]["accuracy"] == parity["torch_accuracy"] is not None
    expected = {"README.md", "export.json", "labels.json", "model.onnx", "parity.json", "preprocessor.json"}
    assert expected <= set(result.files) and ("tokenizer.json" in result.files) == text
    provenance = json.loads((tmp_path / "out" / "export.json").read_text())
    assert provenance["method"] == method and provenance["merged"] == (method == "lora")
    names = " ".join(initializer_names(tmp_path / "out" / "model.onnx"))
    if method == "lora":  # merged into the base weights: no LoRA tensor left in the graph
        assert "lora_" not in names
    preprocessing = json.loads((tmp_path / "out" / "preprocessor.json").read_text())
    assert preprocessing == AutoTransfer.from_pretrained(folder).preprocessor.to_dict()


def test_lora_is_merged_but_the_saved_model_is_not_touched(tiny_models, tmp_path):
    folder = saved_model(tiny_models, tmp_path, "transformers_bert", "lora")
    model = AutoTransfer.from_pretrained(folder)
    hftransfer.export(model, tmp_path / "out", data=text_csv(tmp_path), num_samples=8)
    assert model.method.name == "lora" and any("lora_" in n for n, _ in model.named_parameters())


def test_dann_model_exports_its_head_bottleneck_checked_on_the_recorded_validation_split(tmp_path):
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    np.savez(tmp_path / "target.npz", x=255 - x[:64])
    config = tiny_config(tmp_path, epochs=1, objective={"name": "dann", "hidden_dim": 16},
                         target={"source": str(tmp_path / "target.npz")}, **{"model.name": "timm:test_resnet",
                                                                               "data.max_train_samples": 32,
                                                                               "data.max_eval_samples": 16})
    run = hftransfer.train(config)
    assert run.model.head.bottleneck is not None
    result = hftransfer.export(run.model_dir, tmp_path / "out", num_samples=16)
    parity = result.parity
    assert parity["inputs"]["source"] == "validation"
    assert "sklearn_digits validation" in parity["inputs"]["description"]
    assert parity["passed"] and parity["onnx"]["accuracy"] == parity["torch_accuracy"] is not None
    assert any("bottleneck" in n for n in initializer_names(tmp_path / "out" / "model.onnx"))


def test_a_broken_export_fails_parity_and_writes_nothing(tiny_models, tmp_path, monkeypatch):
    folder = saved_model(tiny_models, tmp_path, "transformers_bert")
    real = export_api.export_onnx

    def perturbed(model, path, opset):  # the traced graph, then one head weight nudged by 1e-2
        names = real(model, path, opset)
        graph = onnx.load(str(path))
        head = next(t for t in graph.graph.initializer if t.name.endswith("head.fc.weight"))
        values = onnx.numpy_helper.to_array(head).copy()
        values[0, 0] += 1e-2
        head.CopyFrom(onnx.numpy_helper.from_array(values, head.name))
        onnx.save(graph, str(path))
        return names

    monkeypatch.setattr(export_api, "export_onnx", perturbed)
    with pytest.raises(ParityError, match=r"max \|delta logit\| .* \(atol 0\.0001\).*Nothing was written"):
        hftransfer.export(folder, tmp_path / "out", data=text_csv(tmp_path), num_samples=16)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp")]
    # The same graph passes once the tolerance admits the change (the check measures, it does not guess).
    result = hftransfer.export(folder, tmp_path / "out", data=text_csv(tmp_path), num_samples=16, atol=1.0)
    assert 1e-4 < result.parity["onnx"]["max_abs_logit_diff"] < 1.0


def test_graph_axes_are_dynamic_for_batch_and_sequence(tiny_models, tmp_path):
    import onnxruntime as ort

    for key in ("transformers_bert", "timm_cnn"):
        folder = saved_model(tiny_models, tmp_path, key, *(("prefix_tuning", {"num_virtual_tokens": 4})
                                                            if key == "transformers_bert" else ("full", None)))
        out = tmp_path / f"out-{key}"
        with pytest.warns(ExportWarning):
            hftransfer.export(folder, out, num_samples=4)
        model = AutoTransfer.from_pretrained(folder).eval()
        session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
        if key == "transformers_bert":  # the dummy traced was 2 rows of 12 tokens; run 7 rows of 3..25 tokens
            texts = ["good " * n for n in (1, 23, 4, 9, 2, 15, 7)]
            batch = dict(model.preprocess(texts))
            assert batch["input_ids"].shape[1] == 25
        else:
            batch = {"pixel_values": torch.randn(5, *model.preprocessor.data_config["input_size"])}
        feed = {i.name: batch[i.name].numpy() for i in session.get_inputs()}
        with torch.no_grad():
            expected = model(**batch).logits.numpy()
        np.testing.assert_allclose(session.run(["logits"], feed)[0], expected, rtol=0, atol=1e-4)


def test_int8_is_reported_as_a_change_not_a_failure(tiny_models, tmp_path):
    folder = saved_model(tiny_models, tmp_path, "transformers_bert", "adapter")
    result = hftransfer.export(folder, tmp_path / "out", quantize="int8", data=text_csv(tmp_path), num_samples=24)
    int8 = result.parity["int8"]
    assert int8["file"] == "model.int8.onnx" and (tmp_path / "out" / "model.int8.onnx").is_file()
    assert int8["max_abs_logit_diff"] > result.parity["onnx"]["max_abs_logit_diff"]  # quantisation moved logits
    assert int8["accuracy_change"] == pytest.approx(int8["accuracy"] - result.parity["torch_accuracy"])
    ops = {n.op_type for n in onnx.load(str(tmp_path / "out" / "model.int8.onnx")).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops


def test_predict_backend_onnx_gives_the_torch_labels(tiny_models, tmp_path):
    image_folder = saved_model(tiny_models, tmp_path, "timm_cnn")
    with pytest.warns(ExportWarning):
        hftransfer.export(image_folder, tmp_path / "img-onnx", num_samples=4)
    images = image_files(tmp_path / "images")
    text_folder = saved_model(tiny_models, tmp_path, "transformers_bert", "prefix_tuning", {"num_virtual_tokens": 4})
    hftransfer.export(text_folder, tmp_path / "txt-onnx", data=text_csv(tmp_path), num_samples=8)
    texts = ["good", "the movie was very dull and not fun", "a great film", "bad"]
    for saved, exported, inputs in ((image_folder, tmp_path / "img-onnx", images),
                                    (text_folder, tmp_path / "txt-onnx", texts)):
        torch_rows = predict_file(str(saved), inputs, top_k=2, precision="fp32", progress_bar=False)
        for backend in ("onnx", "auto"):
            onnx_rows = predict_file(str(exported), inputs, top_k=2, progress_bar=False, backend=backend)
            assert [[p["label"] for p in r["predictions"]] for r in onnx_rows] == \
                [[p["label"] for p in r["predictions"]] for r in torch_rows]
            np.testing.assert_allclose([p["score"] for r in onnx_rows for p in r["predictions"]],
                                       [p["score"] for r in torch_rows for p in r["predictions"]], atol=1e-5)
    assert isinstance(OnnxClassifier(tmp_path / "txt-onnx").predict(texts[:1])[0][0]["score"], float)
    # evaluate on labelled data: the export scores what the torch model scores (text table, image folder).
    for label in LABELS.values():
        image_files(tmp_path / "labelled" / label, 3)
    for model_dir, export_dir, data in ((text_folder, tmp_path / "txt-onnx", text_csv(tmp_path)),
                                        (image_folder, tmp_path / "img-onnx", tmp_path / "labelled")):
        scores = {name: hftransfer.evaluate(str(folder), str(data), progress_bar=False).metrics
                  for name, folder in (("torch", model_dir), ("onnx", export_dir))}
        assert scores["onnx"]["accuracy"] == scores["torch"]["accuracy"]
        # relative too: a random tiny model's loss can be ~50, where two runtimes' float32 kernels differ by ~1e-5
        assert scores["onnx"]["loss"] == pytest.approx(scores["torch"]["loss"], rel=1e-5, abs=1e-5)
    with pytest.raises(hftransfer.errors.ConfigurationError, match="an ONNX export has no card"):
        hftransfer.evaluate(str(tmp_path / "txt-onnx"), str(text_csv(tmp_path)), update_card=True,
                            progress_bar=False)
    with pytest.raises(ExportError, match="not a folder written by `hftransfer export`"):
        predict_file(str(text_folder), texts, backend="onnx", progress_bar=False)
    with pytest.raises(ExportError, match="export with --quantize int8"):
        predict_file(str(tmp_path / "txt-onnx"), texts, backend="onnx-int8", progress_bar=False)


def test_readme_snippet_runs_on_its_own(tiny_models, tmp_path):
    folder = saved_model(tiny_models, tmp_path, "timm_cnn")
    with pytest.warns(ExportWarning):
        hftransfer.export(folder, tmp_path / "out", num_samples=4)
    image = image_files(tmp_path / "images", 1)[0]
    readme = (tmp_path / "out" / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1).replace("image.jpg", image)
    printed = subprocess.run([sys.executable, "-c", code], cwd=tmp_path / "out", capture_output=True, text=True,
                             check=True).stdout
    expected = OnnxClassifier(tmp_path / "out").predict([__import__("PIL.Image").Image.open(image)])[0][0]["label"]
    assert printed.strip() == str([expected])


def test_cli_export_and_its_argument_errors(tiny_models, tmp_path, capsys):
    from hftransfer.cli import main

    folder = saved_model(tiny_models, tmp_path, "transformers_bert", "lora")
    named = text_csv(tmp_path).read_text()  # integer labels, named by --label-names
    (tmp_path / "ints.csv").write_text(named.replace(",negative", ",0").replace(",positive", ",1"))
    assert main(["export", str(folder), str(tmp_path / "out"), "--data", str(tmp_path / "ints.csv"),
                 "--label-names", "negative,positive", "--num-samples", "8", "--quantize", "int8",
                 "--opset", "17"]) == 0
    out = capsys.readouterr().out
    assert "model.onnx" in out and "top-1 agreement 100.0%" in out and "int8 (model.int8.onnx)" in out
    assert main(["export", str(folder), str(tmp_path / "bad"), "--opset", "9"]) == 2
    assert "--opset 9 must be an integer from 14 to 20" in capsys.readouterr().err
    assert main(["export", str(folder), str(tmp_path / "bad"), "--atol", "0"]) == 2
    assert "--atol 0.0 must be a positive number" in capsys.readouterr().err
    assert main(["export", str(folder), str(folder)]) == 2  # never replaces the saved model (or any other folder)
    assert "exists and is not an earlier export" in capsys.readouterr().err
    assert (folder / "hftransfer_config.json").is_file()
    with pytest.raises(ExportError, match="--format 'tflite' is not supported"):
        hftransfer.export(folder, tmp_path / "bad", format="tflite")
    assert not (tmp_path / "bad").exists()
