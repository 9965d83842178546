"""Each training option does what it says (not only that a run with it finishes), and bad settings fail early."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch

import hftransfer
from hftransfer import AutoTransfer
from hftransfer.errors import ConfigurationError, ModelNameError, OfflineError, OutputDirError
from hftransfer.training import Callback, TrainConfig, TransferTrainer

from helpers import text_csv, tiny_config


def set_up(config: dict) -> TransferTrainer:
    trainer = TransferTrainer(TrainConfig.from_dict(config))
    trainer.setup()
    trainer._close_logging()
    return trainer


def test_backbone_lr_scale_sets_the_backbone_param_group_lrs(tmp_path):
    # optim.backbone_lr_scale multiplies every backbone LR; the head keeps lr (head_lr unset).
    trainer = set_up(tiny_config(tmp_path, **{"optim.lr": 0.01, "optim.backbone_lr_scale": 0.1}))
    lrs: dict[str, set[float]] = {}
    for group in trainer.optimizer.param_groups:
        for name in group["param_names"]:
            lrs.setdefault(name.split(".")[0], set()).add(round(group["lr"], 12))
    assert lrs == {"head": {0.01}, "backbone": {0.001}}


@pytest.mark.parametrize("on", [True, False])
def test_image_cache_and_channels_last(tmp_path, on):
    # image_cache_mb keeps decoded images after the first pass; channels_last converts the conv weights to NHWC.
    trainer = set_up(tiny_config(tmp_path, image_cache_mb=4 if on else 0, **{"model.channels_last": on}))
    dataset = trainer.train_loader.dataset
    decoded = []
    real = dataset.data.__class__.__getitem__

    class Counting(type(dataset.data)):
        def __getitem__(self, key):
            if isinstance(key, int):
                decoded.append(key)
            return real(self, key)

    dataset.data.__class__ = Counting
    for _ in range(2):
        for _batch in trainer.train_loader:
            pass
    assert len(decoded) == (64 if on else 128)  # the second epoch reads no image again when cached
    model = trainer.accelerator.unwrap_model(trainer.model)
    conv = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) is on
    assert conv.weight.is_contiguous() is not on


def test_bucket_by_length_reduces_padding(tiny_models, tmp_path):
    # Text batches of similar lengths: the padding over one epoch is a fraction of shuffled batches' padding.
    rows = ["text,label"] + [f"{' '.join(['good'] * (1 + (i * 7) % 20))},{i % 2}" for i in range(64)]
    (tmp_path / "lengths.csv").write_text("\n".join(rows) + "\n")
    padding = {}
    for bucket in (True, False):
        config = tiny_config(tmp_path / str(bucket), bucket_by_length=bucket, batch_size=8,
                             **{"model.name": tiny_models["transformers_bert"], "model.pretrained": False})
        config["model"].pop("image_size")
        config["data"] = {"source": str(tmp_path / "lengths.csv"), "validation_split": 0.25}
        trainer = set_up(config)
        padding[bucket] = sum(int((batch["attention_mask"] == 0).sum()) for batch in trainer.train_loader)
    assert padding[True] * 3 < padding[False], padding


def test_train_norms_trains_the_backbone_norms():
    # method.train_norms=true: LoRA also trains (and the optimizer updates) the backbone's BatchNorm weights.
    from hftransfer.training.freezing import depth_map
    from hftransfer.training.optim import build_optimizer

    for train_norms in (True, False):
        model = AutoTransfer.from_pretrained("timm:test_resnet", num_labels=3, pretrained=False, method="lora",
                                             method_config={"train_norms": train_norms})
        norms = {n for n, p in model.named_parameters() if p.requires_grad and ".bn" in n}
        assert bool(norms) is train_norms
        if not train_norms:
            continue
        cfg = TrainConfig.from_dict({"optim": {"lr": 0.1}}).optim
        optimizer = build_optimizer(model, model.method, depth_map(model), cfg)
        name = sorted(norms)[0]
        before = dict(model.named_parameters())[name].detach().clone()
        model.train()
        model(pixel_values=torch.randn(4, 3, 32, 32), labels=torch.tensor([0, 1, 2, 0])).loss.backward()
        optimizer.step()
        assert not torch.equal(dict(model.named_parameters())[name], before)


def test_randaugment_changes_the_training_images(tmp_path):
    # augment=randaugment puts RandAugment in the training transform: the same image, crop and seed differ from the
    # default preset's result.
    from hftransfer.training.loaders import ImageDataset

    images = {}
    for augment in ("randaugment", "default"):
        trainer = set_up(tiny_config(tmp_path / augment, augment=augment))
        dataset = trainer.train_loader.dataset
        assert ("RandAugment" in repr(dataset.transform)) is (augment == "randaugment")
        assert isinstance(dataset, ImageDataset)
        images[augment] = torch.stack([dataset[(0, i)]["pixel_values"] for i in range(8)])
    assert not torch.allclose(images["randaugment"], images["default"])


@pytest.mark.parametrize("augment", ["upright", "randaugment_upright"])
def test_upright_presets_never_flip_and_keep_half_the_image(augment):
    # Digits: a flipped 2 or a crop of 8% of a 7 is another class. The upright presets crop >= 50% and never flip.
    from hftransfer.augment import UPRIGHT_CROP_SCALE, build_image_transform
    from hftransfer.preprocessing import IMAGENET_DATA_CONFIG

    def steps(augment):
        config = {**IMAGENET_DATA_CONFIG, "input_size": (3, 32, 32)}
        return {type(t).__name__: t for t in build_image_transform(config, train=True, augment=augment).transforms}

    upright = steps(augment)
    assert upright["RandomResizedCropAndInterpolation"].scale == UPRIGHT_CROP_SCALE == (0.5, 1.0)
    assert not [name for name in upright if "Flip" in name]
    assert ("RandAugment" in upright) is (augment == "randaugment_upright")
    assert [name for name in steps("default") if "Flip" in name]  # the control: the default preset flips


def test_mixup_cutmix_and_label_smoothing_change_inputs_and_loss(tmp_path, monkeypatch):
    # Mixup/CutMix: the model sees mixed images and soft targets. Label smoothing: the loss is the smoothed one.
    import torch.nn.functional as F

    seen = []
    real_ce = F.cross_entropy

    def recording_ce(logits, target, *args, label_smoothing=0.0, **kwargs):
        seen.append((logits.detach(), target.detach(), label_smoothing))
        return real_ce(logits, target, *args, label_smoothing=label_smoothing, **kwargs)

    monkeypatch.setattr(F, "cross_entropy", recording_ce)
    mixed = []
    real_mixup = TransferTrainer._mixup

    def recording_mixup(self):
        apply = real_mixup(self)

        def wrapped(x, y):
            before = x.clone()  # timm mixes in place
            out, targets = apply(x, y)
            mixed.append((before, out.clone(), targets))
            return out, targets

        return wrapped if apply is not None else None

    monkeypatch.setattr(TransferTrainer, "_mixup", recording_mixup)
    hftransfer.train(tiny_config(tmp_path / "mix", epochs=1, max_steps=2, mixup_alpha=1.0, cutmix_alpha=1.0,
                                 label_smoothing=0.1))
    assert mixed and all(not torch.equal(before, after) for before, after, _ in mixed)
    soft = mixed[0][2]
    assert soft.shape == (16, 10) and soft.dtype.is_floating_point
    assert (soft.max(-1).values < 1).all() and (soft > 0.02).sum(-1).ge(2).any()  # smoothed, two classes mixed
    seen.clear()
    hftransfer.train(tiny_config(tmp_path / "smooth", epochs=1, max_steps=1, label_smoothing=0.1))
    train_calls = [s for s in seen if s[2] == 0.1]
    assert train_calls, "label_smoothing never reached the training loss"
    logits, target, _ = train_calls[0]
    assert real_ce(logits, target, label_smoothing=0.1) != pytest.approx(float(real_ce(logits, target)))


class _ForwardCounter(Callback):
    """Counts forward calls inside the first transformer layer in training mode (checkpointing runs them twice).

    transformers checkpoints a layer's ``forward`` (its own hooks stay outside), so a sub-module is counted.
    """

    def __init__(self):
        self.calls, self.steps, self.flag = 0, 0, None

    def on_train_begin(self, trainer):
        backbone = trainer.accelerator.unwrap_model(trainer.model).backbone
        layer = next(m for m in backbone.modules() if type(m).__name__ == "BertIntermediate")
        self.flag = any(getattr(m, "gradient_checkpointing", False) for m in backbone.modules())
        layer.register_forward_hook(lambda module, args, out: setattr(self, "calls", self.calls + module.training))

    def on_step_end(self, trainer, state):
        self.steps += 1


@pytest.mark.parametrize("checkpointing", [True, False])
def test_gradient_checkpointing_recomputes_activations(tiny_models, tmp_path, checkpointing):
    counter = _ForwardCounter()
    config = tiny_config(tmp_path, recipe="lora", epochs=1, **{
        "model.name": tiny_models["transformers_bert"], "model.pretrained": False,
        "model.gradient_checkpointing": checkpointing})
    config["model"].pop("image_size")
    config["data"] = {"source": str(text_csv(tmp_path)), "validation_split": 0.25}
    hftransfer.train(config, callbacks=[counter])
    assert counter.flag is checkpointing
    assert counter.steps > 0 and counter.calls == counter.steps * (2 if checkpointing else 1)


# --- settings that need no data fail before the data is read ------------------------------------------------------


@pytest.fixture
def no_data_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the data was loaded before a setting that needs no data was checked")

    monkeypatch.setattr("hftransfer.training.engine.load_data", refuse)


@pytest.mark.parametrize(("overrides", "error", "message"), [
    ({"model.name": "resnet5000"}, (ModelNameError, OfflineError), "resnet5000"),
    ({"model.name": "timm:resnet5000"}, ModelNameError, "'timm:resnet5000' is not a timm architecture"),
    ({"model.name": "packaged:resnet"}, ModelNameError, "'packaged:resnet' is unknown"),
    ({"model.name": "./no/such/folder"}, ModelNameError, "is not an existing folder"),
    ({"model.name": "timm:test_convnext", "model.pretrained": True}, (OfflineError, ModelNameError),
     "test_convnext"),
])
def test_unknown_model_names_fail_before_the_data_is_read(tmp_path, no_data_loading, overrides, error, message):
    with pytest.raises(error, match=message):
        hftransfer.train(tiny_config(tmp_path, **overrides))


def test_output_dir_that_is_a_file_is_named(tmp_path, no_data_loading):
    (tmp_path / "taken").write_text("not a folder")
    for output_dir in (tmp_path / "taken", tmp_path / "taken" / "run"):
        with pytest.raises(OutputDirError, match=r"output_dir=.*taken.* is a file. Choose another output_dir"):
            hftransfer.train(tiny_config(tmp_path, output_dir=str(output_dir)))


def test_push_to_hub_while_offline_fails_before_the_data_is_read(tmp_path, no_data_loading, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(OfflineError, match="Cannot push to 'me/digits': HF_HUB_OFFLINE is set"):
        hftransfer.train(tiny_config(tmp_path, push_to_hub=True, hub_repo_id="me/digits"))


def test_top_k_metric_for_best_on_too_few_classes_fails_before_training(tmp_path, monkeypatch):
    import hftransfer.training.engine as engine

    monkeypatch.setattr(engine.TransferTrainer, "_setup_loaders", lambda self: pytest.fail("training started"))
    config = tiny_config(tmp_path, metric_for_best="top5_accuracy")
    config["data"] = {"source": str(text_csv(tmp_path))}
    with pytest.raises(ConfigurationError, match=r"metric_for_best='top5_accuracy' is not computed for 2 classes"):
        hftransfer.train(config)


# --- the default path is quiet -------------------------------------------------------------------------------------


def _transformers_warnings(action) -> tuple[list[str], list[str]]:
    """Run ``action`` with transformers logging at WARNING; return (log messages, Python warnings)."""
    from transformers.utils import logging as hf_logging

    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    root = logging.getLogger("transformers")
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()
    root.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            action()
    finally:
        root.removeHandler(handler)
        hf_logging.set_verbosity(verbosity)
    return records, [str(w.message) for w in caught]


def test_default_text_path_emits_no_load_report_or_checkpointing_warning(tiny_models):
    # The tiny BERT was saved with a pooler; mean pooling skips it. transformers reports those weights as UNEXPECTED
    # and deprecates is_gradient_checkpointing: neither is the user's business on hftransfer's default path.
    def default_path():
        model = AutoTransfer.from_pretrained(tiny_models["transformers_bert"], num_labels=2, method="lora")
        model.backbone.set_grad_checkpointing(True)
        model.train()
        model(**model.preprocess(["good movie", "bad film"]), labels=torch.tensor([1, 0])).loss.backward()

    logs, python_warnings = _transformers_warnings(default_path)
    assert not [m for m in logs if "LOAD REPORT" in m or "use_cache" in m], logs
    assert not [m for m in python_warnings if "checkpointing" in m], python_warnings

    def plain_transformers():  # the same load without hftransfer does report, so the check above can fail
        from transformers import BertModel

        BertModel.from_pretrained(tiny_models["transformers_bert"], add_pooling_layer=False)

    assert any("LOAD REPORT" in m for m in _transformers_warnings(plain_transformers)[0])


def test_a_load_report_with_real_problems_is_kept():
    from hftransfer.backbones.transformers_backbone import _UnusedPoolerReportFilter

    def record(message):
        return logging.LogRecord("transformers.modeling_utils", logging.WARNING, __file__, 1, message, None, None)

    report = ("BertModel LOAD REPORT from: x\nKey | Status |\n----+---\npooler.dense.weight | UNEXPECTED |\n"
              "{extra}\nNotes:\n- UNEXPECTED:\tcan be ignored")
    keep = _UnusedPoolerReportFilter().filter
    assert not keep(record(report.format(extra="pooler.dense.bias   | UNEXPECTED |")))
    assert keep(record(report.format(extra="encoder.layer.0.attention.self.query.weight | MISSING |")))
    assert keep(record(report.format(extra="classifier.weight | UNEXPECTED |")))
    assert keep(record("some other warning"))


def test_in_memory_test_arrays_are_scored_once_on_the_best_model(tmp_path):
    # from_arrays(x_test=, y_test=): the held-out split reaches the run like data.test does (metrics.json test_eval)
    import json

    from sklearn.datasets import load_digits

    from hftransfer.data import from_arrays

    digits = load_digits()
    pixels = (digits.images * 16).clip(0, 255).astype("uint8")
    data = from_arrays(pixels[:80], digits.target[:80], x_test=pixels[-30:], y_test=digits.target[-30:],
                       label_names=[str(i) for i in range(10)])
    result = hftransfer.train(tiny_config(tmp_path, epochs=1), data=data)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert result.test_metrics is not None and result.test_metrics["per_class"]["num_samples"] == 30
    assert metrics["test_eval"]["accuracy"] == result.test_metrics["accuracy"]
    assert sum(map(sum, metrics["test_eval"]["confusion_matrix"])) == 30
