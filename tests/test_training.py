"""The training engine on tiny models: recipes, controls, outputs, resume after SIGKILL, 2-process runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import hftransfer
from hftransfer import AutoTransfer
from hftransfer.errors import ConfigurationError
from hftransfer.training import Callback, TrainConfig, TransferTrainer
from hftransfer.training.freezing import depth_map
from hftransfer.training.optim import build_optimizer, build_scheduler, param_groups

from helpers import (
    REPO,
    assert_same_weights,
    cpu_env,
    launch_single_and_two_process,
    run_killed_and_resumed,
    saved_weights,
    text_csv,
    tiny_config,
)


@pytest.mark.parametrize("recipe", ["full", "linear_probe", "lora"])
def test_each_recipe_trains_and_writes_its_outputs(tmp_path, recipe):
    # Every recipe runs the same loop and leaves a loadable best model, metrics, config, log and card.
    result = hftransfer.train(tiny_config(tmp_path, recipe=recipe))
    out = Path(result.output_dir)
    assert {"model", "metrics.json", "config.yaml", "train.log"} <= {p.name for p in out.iterdir()}
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["history"]) == 2 and metrics["recipe"] == recipe
    final = metrics["final_eval"]
    assert set(final["per_class"]["classes"]) == {str(i) for i in range(10)}
    assert len(final["confusion_matrix"]) == 10 and sum(map(sum, final["confusion_matrix"])) == 40
    model = AutoTransfer.from_pretrained(result.model_dir)
    assert model.method.name == recipe and model.num_labels == 10
    assert (result.model_dir / "README.md").is_file() and (result.model_dir / "confusion_matrix.png").is_file()
    assert TrainConfig.from_yaml(out / "config.yaml").recipe == recipe


def test_text_recipe_on_csv(tiny_models, tmp_path):
    # A text model trains from a CSV with named columns (with gradient checkpointing on); label names come from the
    # data, the adapters are trained and saved. (test_training_options checks that checkpointing recomputes.)
    checkpointed = []

    class Look(Callback):
        def on_train_begin(self, trainer):
            backbone = trainer.accelerator.unwrap_model(trainer.model).backbone
            checkpointed.append(any(getattr(m, "gradient_checkpointing", False) for m in backbone.modules()))

    config = tiny_config(tmp_path, recipe="lora", **{"model.name": tiny_models["transformers_bert"],
                                                     "model.pretrained": False, "model.gradient_checkpointing": True})
    config["model"].pop("image_size")
    config["data"] = {"source": str(text_csv(tmp_path)), "text_column": "text", "label_column": "label"}
    result = hftransfer.train(config, callbacks=[Look()])
    assert checkpointed == [True]
    assert AutoTransfer.from_pretrained(result.model_dir).id2label == {0: "negative", 1: "positive"}
    adapters = load_file(next(result.model_dir.glob("*.safetensors")))  # full weights: the base is random
    lora_b = [v for k, v in adapters.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # B starts at zero: non-zero means it trained
    assert len(result.history) == 2  # the best epoch's model is the one kept, and its numbers are reported
    assert result.final_metrics["accuracy"] == result.history[result.best_epoch - 1]["eval_accuracy"]


def test_best_checkpoint_is_kept_not_the_last(tmp_path):
    # After epoch 1 the weights are wrecked; the saved model and final metrics are epoch 1's, not the last.
    class Wreck(Callback):
        def on_epoch_end(self, trainer, state, metrics):
            if state["epoch"] == 1:  # after the first epoch: from now on every prediction is class 0
                with torch.no_grad():
                    model = trainer.accelerator.unwrap_model(trainer.model)
                    for p in model.parameters():
                        p.mul_(0.0)
                    model.head.fc.bias[0] = 100.0
                for group in trainer.optimizer.param_groups:
                    group["lr"] = 0.0
                trainer.scheduler.scheduler.base_lrs = [0.0] * len(trainer.scheduler.scheduler.base_lrs)

    result = hftransfer.train(tiny_config(tmp_path, epochs=2), callbacks=[Wreck()])
    first, last = result.history[0]["eval_accuracy"], result.history[1]["eval_accuracy"]
    assert first > last, result.history
    assert result.best_epoch == 1
    assert result.final_metrics["accuracy"] == pytest.approx(first)


def test_early_stopping_stops_after_patience(tmp_path):
    # With no improvement (lr=0), patience=1 stops after 2 of 6 epochs.
    result = hftransfer.train(tiny_config(tmp_path, epochs=6, early_stopping_patience=1, **{"optim.lr": 0.0}))
    assert len(result.history) == 2


def test_unfreeze_schedule_controls_trainable_parameters(tmp_path):
    # head for epoch 0, top 1 block for epoch 1, then everything; the frozen backbone does not change in epoch 0.
    seen, after_head_epoch = [], {}

    class Record(Callback):
        def on_epoch_end(self, trainer, state, metrics):
            model = trainer.accelerator.unwrap_model(trainer.model)
            seen.append({n for n, p in model.named_parameters() if p.requires_grad})
            if len(seen) == 1:
                after_head_epoch.update({k: v.clone() for k, v in model.backbone.state_dict().items()})

    schedule = [{"epoch": 0, "train": "head"}, {"epoch": 1, "train": "top:1"}, {"epoch": 2, "train": "all"}]
    trainer = TransferTrainer(TrainConfig.from_dict(tiny_config(tmp_path, epochs=3, unfreeze_schedule=schedule)),
                              callbacks=[Record()])
    trainer.setup()
    before = {k: v.clone() for k, v in trainer.accelerator.unwrap_model(trainer.model).backbone.state_dict().items()}
    trainer.train()
    assert all(n.startswith("head.") for n in seen[0])
    assert seen[0] < seen[1] < seen[2]
    assert any(n.startswith("backbone.model.stages.3") for n in seen[1])
    assert not any(n.startswith("backbone.model.stages.0") for n in seen[1])
    torch.testing.assert_close(after_head_epoch, before, rtol=0, atol=0)


def test_sgd_with_momentum_and_an_unfreeze_schedule_trains(tmp_path):
    # The shipped hymenoptera `full` config (SGD momentum 0.9, head first then all) crashed at the first step after
    # the unfreeze: torch's fused SGD with momentum fails when parameters join later. It now runs unfused there.
    schedule = [{"epoch": 0, "train": "head"}, {"epoch": 1, "train": "all"}]
    config = tiny_config(tmp_path, epochs=2, unfreeze_schedule=schedule,
                         **{"optim.name": "sgd", "optim.momentum": 0.9, "optim.lr": 0.01})
    result = hftransfer.train(config)
    assert len(result.history) == 2
    trainer = TransferTrainer(TrainConfig.from_dict(tiny_config(tmp_path / "s", unfreeze_schedule=schedule,
                                                                **{"optim.name": "sgd"})))
    trainer.setup()
    assert not trainer.optimizer.defaults["fused"]
    plain = TransferTrainer(TrainConfig.from_dict(tiny_config(tmp_path / "plain", **{"optim.name": "sgd"})))
    plain.setup()
    assert plain.optimizer.defaults["fused"]  # no schedule: the fused kernel stays
    with pytest.raises(ConfigurationError, match="optim.fused=true: torch's fused SGD with momentum"):
        TransferTrainer(TrainConfig.from_dict(tiny_config(tmp_path / "f", unfreeze_schedule=schedule,
                                                          **{"optim.name": "sgd", "optim.fused": True}))).setup()


def test_param_groups_decay_and_layerwise_lr(tmp_path):
    # No weight decay on 1-d params; layer-wise decay gives lower LRs to lower blocks; head gets head_lr.
    model = AutoTransfer.from_pretrained("timm:test_vit", num_labels=3, pretrained=False)
    depths = depth_map(model)
    cfg = TrainConfig.from_dict({"optim": {"lr": 1.0, "head_lr": 5.0, "layer_decay": 0.5, "weight_decay": 0.1}}).optim
    groups = param_groups(model, model.method, depths, cfg)
    by_name = {n: g for g in groups for n in g["param_names"]}
    assert by_name["head.fc.weight"]["lr"] == 5.0
    assert by_name["backbone.model.blocks.5.attn.qkv.weight"]["lr"] == 0.5
    assert by_name["backbone.model.blocks.0.attn.qkv.weight"]["lr"] == 0.5 ** 6
    assert by_name["backbone.model.patch_embed.proj.weight"]["lr"] == 0.5 ** 7
    assert by_name["backbone.model.blocks.0.norm1.weight"]["weight_decay"] == 0.0
    assert by_name["backbone.model.blocks.0.attn.qkv.bias"]["weight_decay"] == 0.0
    assert by_name["backbone.model.blocks.0.attn.qkv.weight"]["weight_decay"] == 0.1


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_optimizer_is_fused_by_default_and_steps_like_the_unfused_one(name):
    # Fused kernels are the default where possible; they take the same step as the per-tensor implementation.
    torch.manual_seed(0)
    steps = {}
    for fused in (None, False):
        model = AutoTransfer.from_pretrained("timm:test_convnext", num_labels=3, pretrained=False)
        model.load_state_dict(steps.get("init", model.state_dict()))
        steps["init"] = {k: v.clone() for k, v in model.state_dict().items()}
        cfg = TrainConfig.from_dict({"optim": {"name": name, "lr": 0.01, "fused": fused}}).optim
        opt = build_optimizer(model, model.method, depth_map(model), cfg)
        assert bool(opt.defaults["fused"]) is (fused is None)
        x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        for _ in range(3):
            model(pixel_values=x, labels=torch.tensor([0, 1, 2, 0])).loss.backward()
            opt.step()
            opt.zero_grad()
        steps[fused] = model.state_dict()
    for key, value in steps[None].items():
        torch.testing.assert_close(value, steps[False][key], rtol=1e-3, atol=1e-4)  # ~1% of a step


def test_fused_true_on_parameters_it_cannot_fuse_names_the_setting():
    # optim.fused=true insists; parameters on an unsupported device give an error naming the key and the fix.
    model = AutoTransfer.from_pretrained("timm:test_convnext", num_labels=3, pretrained=False).to("meta")
    cfg = TrainConfig.from_dict({"optim": {"fused": True}}).optim
    with pytest.raises(ValueError, match=r"optim.fused=true .* got parameters on \['meta'\]"):
        build_optimizer(model, model.method, depth_map(model), cfg)


@pytest.mark.parametrize(("name", "expected"), [
    ("step", [0.5, 1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 0.1]),
    ("linear", [0.5, 1.0, 6 / 7, 5 / 7, 4 / 7, 3 / 7, 2 / 7, 1 / 7]),
    ("constant", [0.5] + [1.0] * 7),
])
def test_schedulers_with_warmup(name, expected):
    # Linear warmup then the named decay, per optimizer step (step: every 1 epoch of 4 steps here).
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    cfg = TrainConfig.from_dict({"scheduler": {"name": name, "warmup_steps": 1, "step_size_epochs": 1.0}}).scheduler
    sched = build_scheduler(opt, cfg, total_steps=8, steps_per_epoch=4)
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx(expected)


def test_cosine_schedule_reaches_min_lr():
    # Cosine decays from the peak to min_lr_ratio at the last step.
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=2.0)
    cfg = TrainConfig.from_dict({"scheduler": {"name": "cosine", "min_lr_ratio": 0.1}}).scheduler
    sched = build_scheduler(opt, cfg, total_steps=10, steps_per_epoch=5)
    for _ in range(10):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2)


def test_gradient_accumulation_matches_a_bigger_batch(tmp_path):
    # batch 16 x 1 step == batch 8 x 2 accumulation steps (same data order, no BatchNorm).
    base = {"model.name": "timm:test_convnext", "epochs": 1, "optim.name": "sgd", "optim.lr": 0.05,
            "max_grad_norm": None}
    a = hftransfer.train(tiny_config(tmp_path / "a", batch_size=16, **base))
    b = hftransfer.train(tiny_config(tmp_path / "b", batch_size=8, gradient_accumulation_steps=2,
                                     **base))
    wa, wb = load_file(a.model_dir / "model.safetensors"), load_file(b.model_dir / "model.safetensors")
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-4, atol=1e-5)


def test_linear_probe_runs_the_backbone_once(tmp_path):
    # With cached features the backbone sees each image once (setup), never during the 3 training epochs.
    calls = []

    class Count(Callback):
        def on_train_begin(self, trainer):
            backbone = trainer.accelerator.unwrap_model(trainer.model).backbone
            backbone.register_forward_hook(lambda *args: calls.append(1))

    result = hftransfer.train(tiny_config(tmp_path, recipe="linear_probe", epochs=3), callbacks=[Count()])
    assert calls == []
    metrics = json.loads((result.output_dir / "metrics.json").read_text())
    assert metrics["feature_cache"] is True
    log = (result.output_dir / "train.log").read_text()
    assert "cached train features (64, " in log


def test_linear_probe_with_random_augmentation_says_so(tmp_path):
    # A random train transform cannot be cached: the run says so in the log and trains on live features.
    result = hftransfer.train(tiny_config(tmp_path, recipe="linear_probe", epochs=1, augment="default"))
    assert "feature cache off" in (result.output_dir / "train.log").read_text()
    assert json.loads((result.output_dir / "metrics.json").read_text())["feature_cache"] is False


def test_augmentation_mixup_label_smoothing_and_tensorboard(tmp_path):
    # RandAugment + mixup/cutmix + label smoothing train together, and TensorBoard event files are written. What each
    # one changes (images, targets, loss) is checked in test_training_options.py.
    result = hftransfer.train(tiny_config(tmp_path, epochs=1, augment="randaugment", mixup_alpha=0.2,
                                          cutmix_alpha=0.2, label_smoothing=0.1, report_to=["tensorboard"],
                                          log_every_steps=1))
    assert list((result.output_dir / "logs").rglob("events.out.tfevents.*"))


def test_output_dir_with_finished_run_is_protected(tmp_path):
    # A finished run is never overwritten by accident; overwrite_output_dir=true replaces it.
    hftransfer.train(tiny_config(tmp_path, epochs=1))
    with pytest.raises(FileExistsError, match="overwrite_output_dir"):
        hftransfer.train(tiny_config(tmp_path, epochs=1))
    hftransfer.train(tiny_config(tmp_path, epochs=1, overwrite_output_dir=True))


def test_config_errors_name_the_key():
    # Unknown keys and invalid values are reported with the dotted key and the valid choices.
    with pytest.raises(ValueError, match=r"optim\.lrr"):
        TrainConfig.from_dict({"optim": {"lrr": 1}})
    with pytest.raises(ValueError, match="mixed_precision='fp8'"):
        TrainConfig.from_dict({"mixed_precision": "fp8"})
    with pytest.raises(ValueError, match="Unknown recipe 'lorra'"):
        TrainConfig.from_dict({"recipe": "lorra"})
    with pytest.raises(ValueError, match="top:K"):
        TrainConfig.from_dict({"unfreeze_schedule": [{"epoch": 0, "train": "bottom"}]})


def test_modality_mismatch_is_refused(tmp_path, tiny_models):
    # A text backbone on image data fails before training with both sides named.
    config = tiny_config(tmp_path, **{"model.name": tiny_models["transformers_bert"]})
    with pytest.raises(ValueError, match="text backbone but the data"):
        hftransfer.train(config)


def test_bad_images_are_skipped_and_counted(tmp_path):
    # An unreadable image is skipped with a count in metrics.json (on_bad_data=skip).
    import numpy as np
    from PIL import Image

    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    (root / "cat" / "broken.jpg").write_text("not an image")
    config = tiny_config(tmp_path, epochs=1, data={"source": str(root), "validation_split": 0.25})
    with pytest.warns(UserWarning, match="broken.jpg"):
        result = hftransfer.train(config)
    data = json.loads((result.output_dir / "metrics.json").read_text())["data"]
    assert len(data["skipped"]) == 1 and "broken.jpg" in data["skipped"][0]["item"]


def test_every_yaml_config_loads_and_documents_its_launch_command():
    # Each recipes/configs/*.yaml builds a TrainConfig and its header says how to launch it.
    configs = sorted((REPO / "recipes" / "configs").glob("*.yaml"))
    assert len(configs) >= 7
    for path in configs:
        config = TrainConfig.from_yaml(path)
        header = path.read_text().split("\n\n")[0]
        assert "hftransfer train" in header and "accelerate launch" in header, path
        assert "-m hftransfer.recipes --config" in header, path  # the launch that works from a wheel install
        assert config.recipe in hftransfer.list_recipes()


@pytest.mark.integration
def test_cli_lists_recipes_and_trains(tmp_path):
    # `hftransfer recipes` lists every recipe; `hftransfer train CONFIG key=value` trains with the overrides.
    out = subprocess.run([sys.executable, "-m", "hftransfer.cli", "recipes"], capture_output=True, text=True,
                         cwd=REPO, check=True)
    for name in hftransfer.list_recipes():
        assert f"\n{name} " in out.stdout, name
    config = tmp_path / "c.yaml"
    config.write_text(TrainConfig.from_dict(tiny_config(tmp_path)).to_yaml())
    run = subprocess.run([sys.executable, "-m", "hftransfer.cli", "train", str(config), "epochs=1", "recipe=lora",
                          f"output_dir={tmp_path / 'cli'}"], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert metrics["recipe"] == "lora" and len(metrics["history"]) == 1


class Interrupt(Callback):
    """Stops a run (like a crash) right after optimizer step ``step``: its last checkpoint is on disk."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, trainer, state):
        if state["global_step"] == self.step:
            raise KeyboardInterrupt


@pytest.mark.parametrize("recipe", ["full", "lora", "lp_ft"])
def test_an_interrupted_run_resumes_in_process_to_the_uninterrupted_weights(tmp_path, recipe):
    # The quick-tier guard of checkpoint save/restore (the SIGKILL version is in the second tier): model, optimizer,
    # scheduler, RNG and the position in the epoch all come back.
    common = {"recipe": recipe, "epochs": 2, "checkpoint_every_steps": 2, "model.head_dropout": 0.1,
              "augment": "default", "optim.lr": 1e-2}
    clean = hftransfer.train(tiny_config(tmp_path / "clean", **common))
    killed = tiny_config(tmp_path / "killed", **common)
    with pytest.raises(KeyboardInterrupt):
        hftransfer.train(killed, callbacks=[Interrupt(step=5)])  # 4 steps per epoch: mid epoch 2
    resumed = hftransfer.train(killed)
    assert "resumed from" in (Path(killed["output_dir"]) / "train.log").read_text()
    assert_same_weights(saved_weights(clean.output_dir), saved_weights(resumed.output_dir))
    assert clean.history[-1]["train_loss"] == resumed.history[-1]["train_loss"]


@pytest.mark.integration
def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path):
    # Killed mid-epoch (SIGKILL) and resumed from its last checkpoint, a run ends with the same weights, metrics
    # and unfreeze-schedule state as a run that was never interrupted.
    schedule = [{"epoch": 0, "train": "head"}, {"epoch": 1, "train": "all"}]
    common = {"epochs": 3, "checkpoint_every_steps": 2, "unfreeze_schedule": schedule, "model.head_dropout": 0.1,
              "augment": "default"}
    clean = tiny_config(tmp_path / "clean", **common)
    killed = tiny_config(tmp_path / "killed", **common)
    # 4 steps per epoch: step 7 is in the middle of epoch 2 (after the unfreeze), last checkpoint at step 6.
    run_killed_and_resumed(tmp_path, clean, killed, kill_step=7, last_checkpoint=6)
    assert_same_weights(saved_weights(clean["output_dir"]), saved_weights(killed["output_dir"]))
    ma = json.loads((Path(clean["output_dir"]) / "metrics.json").read_text())
    mb = json.loads((Path(killed["output_dir"]) / "metrics.json").read_text())
    drop = ("train_samples_per_s", "train_time_s")
    strip = lambda rows: [{k: v for k, v in r.items() if k not in drop} for r in rows]  # noqa: E731
    assert strip(ma["history"]) == strip(mb["history"])
    assert ma["final_eval"] == mb["final_eval"]


@pytest.mark.integration
def test_two_process_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path):
    # DDP (2 processes, gloo): every process's running loss and RNG come back, so the resumed epoch's train_loss, the
    # metrics and the weights equal the uninterrupted run's (dropout draws from each process's own RNG).
    common = {"epochs": 3, "checkpoint_every_steps": 2, "model.head_dropout": 0.1, "optim.name": "sgd",
              "optim.lr": 0.05}
    clean = tiny_config(tmp_path / "clean", **common)
    killed = tiny_config(tmp_path / "killed", **common)

    def inspect(last: Path) -> None:
        assert len(json.loads((last / "process_losses.json").read_text())) == 2

    run_killed_and_resumed(tmp_path, clean, killed, kill_step=7, last_checkpoint=6, env=cpu_env(),
                           after_kill=inspect, launcher=("--multi_gpu",))
    assert_same_weights(saved_weights(clean["output_dir"]), saved_weights(killed["output_dir"]))
    ma, mb = (json.loads((Path(c["output_dir"]) / "metrics.json").read_text()) for c in (clean, killed))
    drop = ("train_samples_per_s", "train_time_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in ma["history"]] == \
        [{k: v for k, v in r.items() if k not in drop} for r in mb["history"]]


@pytest.mark.integration
def test_two_process_run_matches_single_process_and_only_rank0_writes(tmp_path):
    # accelerate launch --multi_gpu --num_processes 2 (gloo on CPU) on the same global batch gives the same weights
    # and metrics as one process, and rank 1 writes no file.
    base = {"model.name": "timm:test_convnext", "epochs": 2, "optim.name": "sgd", "optim.lr": 0.05,
            "checkpoint_every_steps": 2, "max_grad_norm": 1.0}
    m1, m2, w1, w2 = launch_single_and_two_process(tmp_path, tiny_config(tmp_path / "single", **base),
                                                   tiny_config(tmp_path / "double", **base))
    for r1, r2 in zip(m1["history"], m2["history"]):
        assert r1["eval_accuracy"] == pytest.approx(r2["eval_accuracy"], abs=1 / 40 + 1e-9)
        assert r1["train_loss"] == pytest.approx(r2["train_loss"], rel=1e-3)
    for key in w1:
        torch.testing.assert_close(w1[key], w2[key], rtol=1e-3, atol=1e-4)


class RecordAmp(Callback):
    """Per optimizer step: the dtype the head's Linear computed in (autocast) and the gradient scaler's state."""

    def __init__(self):
        self.dtypes, self.scaler_states, self.scaler = [], [], None

    def on_train_begin(self, trainer):
        self.scaler = trainer.accelerator.scaler
        head = trainer.accelerator.unwrap_model(trainer.model).head.fc
        head.register_forward_hook(lambda module, args, out: self.dtypes.append(out.dtype))

    def on_step_end(self, trainer, state):
        scaler = trainer.accelerator.scaler
        self.scaler_states.append((float(scaler.get_scale()), int(scaler._growth_tracker)))


@pytest.mark.gpu
@pytest.mark.parametrize("recipe", ["full", "lora"])
def test_fp16_on_gpu(tmp_path, recipe):
    # fp16 mixed precision (a GPU feature): the forward runs under fp16 autocast, and a gradient scaler takes part in
    # every optimizer step (each update either grows its growth tracker or, after an overflow, halves the scale);
    # the run saves a loadable model. Skipped on CPU-only machines.
    record = RecordAmp()
    result = hftransfer.train(tiny_config(tmp_path, recipe=recipe, mixed_precision="fp16", epochs=1),
                              callbacks=[record])
    assert isinstance(record.scaler, torch.amp.GradScaler) and record.scaler.is_enabled()
    assert torch.float16 in record.dtypes
    assert len(record.scaler_states) == 4  # 64 samples / batch 16
    assert all(a != b for a, b in zip(record.scaler_states, record.scaler_states[1:])), record.scaler_states
    assert json.loads((result.output_dir / "metrics.json").read_text())["mixed_precision"] == "fp16"
    assert AutoTransfer.from_pretrained(result.model_dir).num_labels == 10


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_fp16_on_cpu_is_refused_before_training(tmp_path):
    # On a CPU accelerate has no fp16 autocast or gradient scaler: instead of training in fp32 under an fp16 label,
    # the run stops at once with the setting named and the CPU alternative.
    from hftransfer.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"mixed_precision='fp16' needs a GPU.*bf16"):
        hftransfer.train(tiny_config(tmp_path, mixed_precision="fp16"))
    assert not (tmp_path / "run").exists()


def test_amp_recorder_sees_autocast_and_every_scaler_update():
    # The recorder used by test_fp16_on_gpu, on CPU with torch's own fp16 autocast and GradScaler("cpu"): it sees the
    # float16 forward and a changed scaler state after every update (and would see none without scaler.update()).
    model = AutoTransfer.from_pretrained("timm:test_convnext", num_labels=3, pretrained=False)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    trainer = type("T", (), {})()
    trainer.model = model
    trainer.accelerator = type("A", (), {"scaler": scaler, "unwrap_model": staticmethod(lambda m: m)})()
    record = RecordAmp()
    record.on_train_begin(trainer)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for step in range(3):
        with torch.autocast("cpu", dtype=torch.float16):
            loss = model(pixel_values=x, labels=torch.tensor([0, 1, 2, 0])).loss
        scaler.scale(loss).backward()
        scaler.step(opt)
        if step < 2:
            scaler.update()
        opt.zero_grad()
        record.on_step_end(trainer, {})
    assert record.dtypes == [torch.float16] * 3
    first, second, third = record.scaler_states
    assert first != second and second == third  # the third step skipped scaler.update(): the recorder sees it


def test_finished_run_drops_its_resume_checkpoints(tmp_path):
    # Checkpoints exist during the run (for resume) and are removed once the best model and metrics are written.
    seen = []

    class Look(Callback):
        def on_epoch_end(self, trainer, state, metrics):
            seen.append(len(list((trainer.output_dir / "checkpoints").glob("step_*"))))

    result = hftransfer.train(tiny_config(tmp_path, epochs=2, checkpoint_every_steps=1), callbacks=[Look()])
    assert seen[0] >= 1
    assert not (result.output_dir / "checkpoints").exists()


def test_a_save_killed_midway_leaves_no_temp_folder_after_the_next_save(tmp_path):
    from hftransfer.training import checkpoint as ckpt

    root = tmp_path / ckpt.CHECKPOINT_DIR
    killed = [root / ".step_00000002.tmp-k1ll3d", root / ".step_00000002.old-k1ll3d"]
    for folder in killed:
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"half")
    keep = root / "step_00000001"
    keep.mkdir()
    (keep / ckpt.TRAINER_STATE).write_text("{}")
    unrelated = root / ".notes"
    unrelated.mkdir()
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000001"]
    ckpt.remove_old_checkpoints(tmp_path, keep=2)
    assert not any(folder.exists() for folder in killed)
    assert keep.is_dir() and unrelated.is_dir()


def test_a_method_the_backbone_cannot_take_fails_before_any_data_is_read(tmp_path, monkeypatch):
    # vera takes Linear layers only: on a CNN it is refused by check_backbone, before the data set is opened.
    import hftransfer.training.engine as engine

    def no_data(*args, **kwargs):
        raise AssertionError("the data was read before the method's pre-flight check")

    monkeypatch.setattr(engine, "load_data", no_data)
    with pytest.raises(ConfigurationError, match="vera"):
        hftransfer.train(tiny_config(tmp_path, recipe="vera", **{"model.name": "timm:test_resnet"}))
    assert not (tmp_path / "run" / "model").exists()
