"""What a new user types and sees: YAML words as option values, early errors, warnings without our internals,
inputs of the wrong modality, hardware-neutral example configs, and no tokenizer noise."""

from __future__ import annotations

import dataclasses
import logging
import typing
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import hftransfer
from hftransfer.cli import main as cli_main
from hftransfer.data import DataConfig, DataError, DataWarning, load_data
from hftransfer.errors import ConfigurationError, PerformanceWarning
from hftransfer.methods.registry import METHODS
from hftransfer.objectives import OBJECTIVES
from hftransfer.recipes.examples import example_configs
from hftransfer.training import TrainConfig, TransferTrainer
from hftransfer.training.config import apply_overrides, read_yaml_config
from hftransfer.utils.config_values import FALSE_WORDS, TRUE_WORDS, load_yaml

from helpers import text_csv, tiny_config


YAML_WORDS = ("no", "yes", "on", "off", "No", "OFF")


def _fields(cls: type, prefix: str = "") -> list[tuple[str, typing.Any, type]]:
    """(dotted key, type hint, owning dataclass) of every plain field of ``cls`` and its nested config dataclasses."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        nested = [a for a in (hint, *typing.get_args(hint)) if dataclasses.is_dataclass(a)]
        if nested:
            out += _fields(nested[0], f"{prefix}{f.name}.")
        else:
            out.append((f"{prefix}{f.name}", hint, cls))
    return out


def _is(hint: typing.Any, kind: type) -> bool:
    return hint is kind or (set(typing.get_args(hint)) - {type(None)} == {kind})


TRAIN_FIELDS = _fields(TrainConfig)
STRING_FIELDS = [key for key, hint, _ in TRAIN_FIELDS if _is(hint, str)]
# target.* / target_eval.* are DataConfig fields too, checked under data.*
BOOL_FIELDS = [key for key, hint, _ in TRAIN_FIELDS if _is(hint, bool) and not key.startswith("target")]
def _has_typed_option(cls: type) -> bool:
    return any(_is(hint, bool) or hint is float for hint in typing.get_type_hints(cls).values())


OPTION_CLASSES = {name: cls for name, cls in
                  {**{f"method:{n}": e.config_cls for n, e in METHODS.items()},
                   **{f"objective:{n}": e.config_cls for n, e in OBJECTIVES.items()}}.items()
                  if _has_typed_option(cls)}  # method:full has no options at all


def test_yaml_reads_only_true_and_false_as_booleans():
    assert load_yaml("a: no\nb: yes\nc: on\nd: off\ne: true\nf: False\nh: [no, 2]") == {
        "a": "no", "b": "yes", "c": "on", "d": "off", "e": True, "f": False, "h": ["no", 2]}


def test_yaml_reads_exponent_floats_without_a_dot_as_numbers():
    # YAML 1.1 reads 1e-3 as a string: an untyped option (model.config_overrides) would get "1e-3".
    assert load_yaml("a: 1e-3\nb: 5E+2\nc: -2.5e-1\nd: 1_000e-3\ne: e5\nf: 1e\ng: 3") == {
        "a": 1e-3, "b": 500.0, "c": -0.25, "d": 1.0, "e": "e5", "f": "1e", "g": 3}
    assert apply_overrides({}, ["model.config_overrides.hidden_dropout_prob=1e-1"]) == {
        "model": {"config_overrides": {"hidden_dropout_prob": 0.1}}}


@pytest.mark.parametrize("key", STRING_FIELDS)
@pytest.mark.parametrize("word", YAML_WORDS)
def test_every_string_option_takes_yaml_words_as_strings(key, word, tmp_path):
    # key=value on the command line and key: value in a YAML file both arrive as the typed string.
    from_override = apply_overrides({}, [f"{key}={word}"])
    *parents, leaf = key.split(".")
    (tmp_path / "c.yaml").write_text("".join(f"{'  ' * i}{p}:\n" for i, p in enumerate(parents))
                                     + f"{'  ' * len(parents)}{leaf}: {word}\n")
    from_file = read_yaml_config(tmp_path / "c.yaml")
    for data in (from_override, from_file):
        node = data
        for part in parents:
            node = node[part]
        assert node[leaf] == word and isinstance(node[leaf], str)


@pytest.mark.parametrize("key", BOOL_FIELDS)
def test_every_boolean_option_reads_yaml_words_by_its_type(key):
    for word in TRUE_WORDS + FALSE_WORDS:
        base = {"data": {"source": "sklearn_digits"}, "hub_repo_id": "me/model"}
        config = TrainConfig.from_dict(apply_overrides(base, [f"{key}={word}"]))
        value = config
        for part in key.split("."):
            value = getattr(value, part)
        assert value is (word in TRUE_WORDS), (key, word)


@pytest.mark.parametrize("name", sorted(OPTION_CLASSES))
def test_method_and_objective_options_are_coerced_by_their_type(name):
    # method.* / objective.* options go through the same coercion: "no" for a bool, "3" for a float.
    cls = OPTION_CLASSES[name]
    hints = typing.get_type_hints(cls)
    data, expected = {}, {}
    for f in dataclasses.fields(cls):
        if _is(hints[f.name], bool):
            data[f.name], expected[f.name] = "no", False
        elif hints[f.name] is float:
            value = 0.0 if (name, f.name) == ("objective:source_only", "source_warmup") else 0.5  # no warm-up there
            data[f.name], expected[f.name] = str(value), value
    options = cls.from_dict(data)
    assert {k: getattr(options, k) for k in expected} == expected


def test_mixed_precision_no_on_the_command_line_is_taken(tmp_path, capsys):
    config = TrainConfig.from_dict(apply_overrides(tiny_config(tmp_path), ["mixed_precision=no", "epochs=1"]))
    assert config.mixed_precision == "no"
    # The CLI gets past the precision check; the deliberately bad sample count is what stops it.
    assert cli_main(["train", "demo_digits", "mixed_precision=no", "data.max_train_samples=-1"]) == 2
    err = capsys.readouterr().err
    assert "mixed_precision" not in err and "max_train_samples=-1" in err, err


def test_a_boolean_for_a_string_option_names_the_option_and_the_fix():
    with pytest.raises(ConfigurationError, match=r"mixed_precision=False must be a string.*mixed_precision='no'"):
        TrainConfig.from_dict({"mixed_precision": False})


def test_example_configs_are_hardware_neutral():
    # bf16 runs 9x slower than fp32 on CPUs without native bf16: no example may ask for it explicitly.
    for name, path in example_configs().items():
        assert load_yaml(path.read_text()).get("mixed_precision") in (None, "auto", "no"), name


def test_wrong_number_of_class_weights_fails_once_the_labels_are_known(tmp_path, monkeypatch, capsys):
    trainer = TransferTrainer(tiny_config(tmp_path, class_weights=[1.0, 2.0, 3.0]))
    monkeypatch.setattr(TransferTrainer, "_setup_model", lambda self: pytest.fail("the model was set up"))
    with pytest.raises(ConfigurationError, match=r"class_weights has 3 weights but the data has 10 classes"):
        trainer.setup()
    code = cli_main(["train", "demo_digits", "class_weights=[1,2]", f"output_dir={tmp_path / 'cli'}",
                     "data.max_train_samples=60", "model.name=timm:test_resnet", "model.pretrained=false"])
    assert code == 2  # an error message, not a traceback
    assert "error: class_weights has 2 weights but the data has 10 classes" in capsys.readouterr().err


def _warn_slow_bf16(tmp_path, monkeypatch, fast: bool, precision: str) -> list[warnings.WarningMessage]:
    from hftransfer.training import auto_precision

    monkeypatch.setattr(auto_precision, "fast_bf16", lambda device: fast)
    trainer = TransferTrainer(tiny_config(tmp_path / precision / str(fast), mixed_precision=precision))
    monkeypatch.setattr(TransferTrainer, "_setup_model", lambda self: (_ for _ in ()).throw(KeyboardInterrupt))
    with warnings.catch_warnings(record=True) as caught, pytest.raises(KeyboardInterrupt):
        warnings.simplefilter("always")
        trainer.setup()  # stops right after the data is read: the warning came before any training
    return [w for w in caught if issubclass(w.category, PerformanceWarning)]


def test_explicit_bf16_without_native_bf16_warns_before_training_with_the_fix(tmp_path, monkeypatch):
    caught = _warn_slow_bf16(tmp_path, monkeypatch, fast=False, precision="bf16")
    assert len(caught) == 1
    assert "no native bf16" in str(caught[0].message) and "mixed_precision=auto" in str(caught[0].message)
    log = (tmp_path / "bf16" / "False" / "run" / "train.log").read_text()
    assert "mixed_precision=bf16 on this cpu, which has no native bf16" in log
    assert _warn_slow_bf16(tmp_path, monkeypatch, fast=True, precision="bf16") == []
    assert _warn_slow_bf16(tmp_path, monkeypatch, fast=False, precision="no") == []


def test_our_warnings_show_the_message_not_our_file_and_line():
    # installed when hftransfer is imported: ours read as a message, anyone else's keep Python's format
    ours = warnings.formatwarning("skipped 1 bad item(s)", DataWarning, "/site/hftransfer/training/engine.py", 113)
    assert ours == "hftransfer warning: skipped 1 bad item(s)\n"
    assert warnings.formatwarning("theirs", UserWarning, "/x/y.py", 3).startswith("/x/y.py:3: UserWarning: theirs")
    assert issubclass(DataWarning, UserWarning)  # still caught by filters written for UserWarning


def test_a_bad_image_while_loading_warns_in_the_users_format(tmp_path):
    folder = tmp_path / "images"
    for label in ("a", "b"):
        (folder / label).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.full((8, 8, 3), 40 * i, dtype=np.uint8)).save(folder / label / f"{i}.png")
    (folder / "a" / "broken.png").write_bytes(b"not a png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_data(DataConfig(source=str(folder), validation_split=0.3))
    shown = [warnings.formatwarning(w.message, w.category, w.filename, w.lineno) for w in caught]
    assert [line for line in shown if line.startswith("hftransfer warning: skipped 1 bad")], shown


def test_an_image_given_to_a_text_model_says_so(tiny_models, tmp_path):
    from hftransfer.inference.inputs import collect_inputs

    image = tmp_path / "cat.jpg"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(image)
    renamed = tmp_path / "cat.dat"
    renamed.write_bytes(image.read_bytes())  # an image whatever its name: the content tells
    for path in (image, renamed):
        with pytest.raises(DataError, match=r"looks like an image, but the model is a text model"):
            collect_inputs([str(path)], "text")
    with pytest.raises(DataError, match=r"is a folder of images, but the model is a text model"):
        collect_inputs([str(tmp_path)], "text")
    with pytest.raises(DataError, match=r"looks like a sentence, but the model is an image model"):
        collect_inputs(["a truly great movie"], "image")
    notes = tmp_path / "notes.bin"
    notes.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match=r"could not be read as UTF-8 text lines"):  # not an image: no image hint
        collect_inputs([str(notes)], "text")


def test_counting_long_texts_for_the_data_report_prints_no_tokenizer_warning(tiny_models, tmp_path):
    import shutil

    from transformers import AutoTokenizer

    bert = tmp_path / "bert-512"  # a tokenizer that knows its model's limit, like MiniLM's (512)
    shutil.copytree(tiny_models["transformers_bert"], bert)
    AutoTokenizer.from_pretrained(bert, model_max_length=64).save_pretrained(bert)
    csv = text_csv(tmp_path, n=24)
    long = " ".join(["good"] * 200)
    csv.write_text(csv.read_text() + f"{long},positive\n")
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Keep(level=logging.DEBUG)
    tlogger = logging.getLogger("transformers")
    tlogger.addHandler(handler)
    old = tlogger.level
    tlogger.setLevel(logging.WARNING)
    try:
        trainer = TransferTrainer({"recipe": "linear_probe", "data": {"source": str(csv), "validation_split": 0.25},
                                   "model": {"name": str(bert), "max_length": 32},
                                   "epochs": 1, "batch_size": 8, "output_dir": str(tmp_path / "run"),
                                   "progress_bar": False})
        trainer.setup()
    finally:
        tlogger.removeHandler(handler)
        tlogger.setLevel(old)
    lengths = trainer.data_report["text_length"]
    assert max(entry["longer_than_max_length"] for entry in lengths.values()) > 0  # the long text was counted
    assert not [m for m in records if "longer than the specified maximum sequence length" in m], records


def test_frozen_layers_compute_no_weight_gradients(tiny_models):
    # LoRA's backward runs the input-gradient matmul of each frozen linear layer (gradients must reach the first
    # adapted layer) but never a weight-gradient matmul: count the matmuls whose result has a frozen weight's shape.
    from torch.utils._python_dispatch import TorchDispatchMode

    class WeightShapedMatmuls(TorchDispatchMode):
        def __init__(self, shapes):
            super().__init__()
            self.shapes, self.count, self.total = shapes, 0, 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.bmm):
                self.total += 1
                self.count += tuple(out.shape) in self.shapes
            return out

    def backward_matmuls(method: str) -> tuple[int, int, int]:
        torch.manual_seed(0)
        model = hftransfer.AutoTransfer.from_pretrained(tiny_models["transformers_bert"], num_labels=2)
        linears = [m for m in model.backbone.modules() if isinstance(m, torch.nn.Linear)]
        shapes = {s for m in linears for s in (tuple(m.weight.shape), tuple(m.weight.shape[::-1]))}
        model.apply_method(method, {})
        model.method.set_trainable(model)
        loss = model(**model.preprocessor(["the movie was good", "a dull film"])).logits.sum()
        with WeightShapedMatmuls(shapes) as counter:
            loss.backward()
        return counter.count, counter.total, len(linears)

    full_weight_grads, _, linears = backward_matmuls("full")
    lora_weight_grads, lora_total, _ = backward_matmuls("lora")
    assert full_weight_grads == linears  # the counter sees every weight gradient when the weights train
    assert lora_weight_grads == 0 and lora_total > linears  # input gradients and LoRA's own A/B only
