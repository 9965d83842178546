"""Speed options: config overrides (attention dropout / SDPA), torch.compile, bf16 feature extraction."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from torch.nn import functional as F

import hftransfer
from hftransfer import AutoTransfer
from hftransfer.errors import ConfigurationError
from hftransfer.training.feature_cache import feature_precision
from hftransfer.utils import compile as compile_utils
from hftransfer.utils import hardware

from helpers import run_py, text_csv, tiny_config


# --- config overrides and the SDPA fast path ---------------------------------------------------------------------

def test_config_overrides_reach_the_transformers_config_and_survive_save_load(tiny_models, tmp_path):
    name = tiny_models["transformers_bert"]
    model = AutoTransfer.from_pretrained(name, num_labels=2, method="lora", attention_probs_dropout_prob=0.0,
                                         hidden_dropout_prob=0.05)
    config = model.backbone.base_model().config
    assert config.attention_probs_dropout_prob == 0.0
    assert config.hidden_dropout_prob == 0.05
    model.save_pretrained(tmp_path / "saved")  # adapter-only: the base is rebuilt with the same overrides
    again = AutoTransfer.from_pretrained(tmp_path / "saved")
    assert again.backbone.base_model().config.attention_probs_dropout_prob == 0.0
    assert again.backbone.base_model().config.hidden_dropout_prob == 0.05


def test_unknown_config_override_names_the_key(tiny_models):
    with pytest.raises(ConfigurationError, match="attention_dropout_typo"):
        AutoTransfer.from_pretrained(tiny_models["transformers_bert"], num_labels=2, attention_dropout_typo=0.0)


def test_transformers_attention_runs_on_sdpa(tiny_models):
    model = AutoTransfer.from_pretrained(tiny_models["transformers_bert"], num_labels=2)
    assert model.backbone.base_model().config._attn_implementation == "sdpa"


def test_cpu_fused_attention_has_no_dropout_so_dropout_sends_sdpa_to_the_math_path():
    # Why model.config_overrides attention_probs_dropout_prob=0.0 speeds up CPU training: the fused CPU kernel
    # (flash attention) refuses dropout_p > 0, so SDPA falls back to the math path, which materialises the
    # attention probabilities. If a torch release adds dropout to the CPU kernel this test tells us to re-measure.
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = k = v = torch.randn(2, 4, 16, 8)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        F.scaled_dot_product_attention(q, k, v, dropout_p=0.0)
        with pytest.raises(RuntimeError), pytest.warns(UserWarning):
            F.scaled_dot_product_attention(q, k, v, dropout_p=0.1)


def test_config_overrides_from_a_training_config(tmp_path, tiny_models):
    csv = text_csv(tmp_path)
    cfg = tiny_config(tmp_path, **{"model.name": tiny_models["transformers_bert"],
                                   "model.config_overrides": {"attention_probs_dropout_prob": 0.0},
                                   "data.source": str(csv), "data.text_column": "text",
                                   "data.label_column": "label", "epochs": 1})
    result = hftransfer.train(cfg)
    assert result.model.backbone.base_model().config.attention_probs_dropout_prob == 0.0


# --- model.cpu_fast_path: cheaper dropout masks, math-path attention -------------------------------------------------

def test_fast_keep_mask_has_the_dropout_distribution_and_follows_the_seed():
    from hftransfer.backbones.cpu_fast_path import keep_mask

    torch.manual_seed(0)
    a = keep_mask(torch.Size([1000, 1000]), 0.1, torch.device("cpu"))
    b = keep_mask(torch.Size([1000, 1000]), 0.1, torch.device("cpu"))
    assert a.dtype == torch.bool and a.shape == (1000, 1000)
    assert float(a.float().mean()) == pytest.approx(0.9, abs=2e-3)
    for lane in range(4):  # every 16-bit sample of a 64-bit draw is uniform
        assert float(a.flatten()[lane::4].float().mean()) == pytest.approx(0.9, abs=3e-3)
    assert not torch.equal(a, b)  # the generator advances
    torch.manual_seed(0)
    assert torch.equal(keep_mask(torch.Size([1000, 1000]), 0.1, torch.device("cpu")), a)  # seeded: reproducible
    odd = keep_mask(torch.Size([999, 7]), 0.5, torch.device("cpu"))
    assert float(odd.float().mean()) == pytest.approx(0.5, abs=0.02)
    assert bool(keep_mask(torch.Size([10000]), 0.0, torch.device("cpu")).all())


def test_fast_dropout_scales_kept_values_and_routes_gradients_through_the_mask():
    from hftransfer.backbones.cpu_fast_path import FastDropout, fast_dropout

    x = torch.randn(64, 384, requires_grad=True)
    y = fast_dropout(x, 0.25)
    kept = y != 0
    assert float(kept.float().mean()) == pytest.approx(0.75, abs=0.02)
    torch.testing.assert_close(y[kept], x[kept] / 0.75)
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / 0.75)
    assert fast_dropout(x, 0.25, training=False) is x and fast_dropout(x, 0.0) is x
    layer = FastDropout(0.5).eval()
    assert layer(x) is x and layer.state_dict() == {}


def test_cpu_fast_path_attention_matches_sdpa_with_padding_and_is_undone(tiny_models):
    from hftransfer.backbones.cpu_fast_path import (
        CPU_ATTENTION,
        FastDropout,
        disable_cpu_fast_path,
        enable_cpu_fast_path,
    )

    stock = AutoTransfer.from_pretrained(tiny_models["transformers_bert"], num_labels=2).eval()
    fast = AutoTransfer.from_pretrained(tiny_models["transformers_bert"], num_labels=2).eval()
    fast.load_state_dict(stock.state_dict())
    keys = set(fast.state_dict())
    changes = enable_cpu_fast_path(fast)
    assert any(CPU_ATTENTION in c for c in changes) and any("dropout layers" in c for c in changes)
    assert fast.backbone.base_model().config._attn_implementation == CPU_ATTENTION
    assert any(isinstance(m, FastDropout) for m in fast.modules()) and set(fast.state_dict()) == keys
    assert CPU_ATTENTION not in fast.backbone.base_model().config.to_json_string()  # never saved
    ids = torch.randint(5, stock.backbone.base_model().config.vocab_size, (3, 12))
    mask = torch.ones_like(ids)
    mask[0, 7:] = 0  # padding must still be masked out
    with torch.no_grad():
        expected = stock(input_ids=ids, attention_mask=mask).logits
        torch.testing.assert_close(fast(input_ids=ids, attention_mask=mask).logits, expected, rtol=1e-4, atol=1e-5)
        changed = ids.clone()
        changed[0, 7:] = 3  # tokens under the padding mask change nothing
        torch.testing.assert_close(fast(input_ids=changed, attention_mask=mask).logits[0], expected[0],
                                   rtol=1e-4, atol=1e-5)
    disable_cpu_fast_path(fast)
    assert fast.backbone.base_model().config._attn_implementation == "sdpa"
    assert not any(isinstance(m, FastDropout) for m in fast.modules())


@pytest.mark.integration
def test_training_with_the_cpu_fast_path_follows_the_stock_kernels(tmp_path, tiny_models):
    # Without dropout the fast path changes only the attention kernel: the same loss curve. With dropout it trains
    # (other random masks), logs what it changed and hands back a model on the stock kernels.
    csv = text_csv(tmp_path)
    common = {"model.name": tiny_models["transformers_bert"], "data.source": str(csv), "data.text_column": "text",
              "data.label_column": "label", "epochs": 2}
    no_dropout = {"model.config_overrides": {"attention_probs_dropout_prob": 0.0, "hidden_dropout_prob": 0.0}}
    stock = hftransfer.train(tiny_config(tmp_path / "stock", **common, **no_dropout, **{"model.cpu_fast_path": False}))
    fast = hftransfer.train(tiny_config(tmp_path / "fast", **common, **no_dropout))
    assert _losses(fast) == pytest.approx(_losses(stock), rel=1e-4)
    assert "model.cpu_fast_path" not in (tmp_path / "stock" / "run" / "train.log").read_text()
    dropout = hftransfer.train(tiny_config(tmp_path / "dropout", **common))
    log = (tmp_path / "dropout" / "run" / "train.log").read_text()
    assert "model.cpu_fast_path: attention: hftransfer_cpu" in log and "dropout layers use the fast CPU mask" in log
    assert torch.isfinite(torch.tensor(_losses(dropout))).all()
    assert dropout.model.backbone.base_model().config._attn_implementation == "sdpa"


# --- torch.compile -------------------------------------------------------------------------------------------------

# Compile tests use a tiny ViT: its repeated blocks share kernels, so a cold inductor compile takes ~58 s (fp32, one
# run on 2 cores) against ~91 s for the tiny ConvNeXt the other tests use.
COMPILE_MODEL = "timm:test_vit"


def _losses(result) -> list[float]:
    return [row["train_loss"] for row in result.history]


@pytest.mark.integration
@pytest.mark.parametrize("recipe", ["full", pytest.param("lora", marks=pytest.mark.slow)])
def test_compile_gives_the_eager_loss_curve_and_reports_compile_time(tmp_path, recipe):
    common = {"recipe": recipe, "epochs": 2, "max_grad_norm": None, "model.name": COMPILE_MODEL}
    eager = hftransfer.train(tiny_config(tmp_path / "eager", **common))
    compiled = hftransfer.train(tiny_config(tmp_path / "compiled", **common, **{"model.compile": True}))
    assert _losses(compiled) == pytest.approx(_losses(eager), rel=1e-3)
    assert compiled.best_metric == pytest.approx(eager.best_metric, abs=0.03)
    assert all(row["compile_time_s"] > 0 for row in compiled.history[:1])
    assert "compile_time_s" not in eager.history[0]
    summary = json.loads((tmp_path / "compiled" / "run" / "metrics.json").read_text())
    # per epoch in the history (like train_time_s), the whole run in metrics.json
    assert summary["compile_time_s"] >= sum(row["compile_time_s"] for row in compiled.history) - 1e-6
    # In-place compile keeps parameter names: the saved model reloads (and predicts) like the eager one.
    again = AutoTransfer.from_pretrained(compiled.model_dir)
    assert set(again.state_dict()) == set(compiled.model.state_dict())


@pytest.mark.integration
def test_compile_that_cannot_apply_says_why_and_trains_eagerly(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(compile_utils.shutil, "which", lambda name: None)
    assert compile_utils.choose_cpp_compiler()[0] is None
    assert "C++ compiler" in compile_utils.choose_cpp_compiler()[1]
    result = hftransfer.train(tiny_config(tmp_path, epochs=1, **{"model.compile": True}))
    log = (tmp_path / "run" / "train.log").read_text()
    assert "model.compile=true cannot apply" in log and "C++ compiler" in log
    assert "compile_time_s" not in result.history[0]


@pytest.mark.integration
@pytest.mark.skipif(not (shutil.which("gcc") and shutil.which("g++")), reason="needs gcc and g++")
def test_a_c_driver_in_cxx_is_replaced_by_a_cpp_driver_whose_kernels_load():
    # CXX=gcc compiles inductor's C++ kernels but does not link libstdc++: they failed to load ("undefined symbol
    # ... ostringstream") at the first compiled step. The probe finds that before compiling and picks g++.
    # Run in a fresh interpreter, as `hftransfer train` is: a library loaded earlier in this process with libstdc++ in
    # its global scope (onnxruntime does so) lets a gcc-built kernel load, and then there is nothing to replace.
    out = run_py("""
        import torch
        from torch._inductor import config
        from hftransfer.utils import compile as compile_utils
        gcc_problem = compile_utils.cpp_build_problem("gcc")
        gxx_problem = compile_utils.cpp_build_problem("g++")
        with config.patch({"cpp.cxx": (None, "gcc")}):
            compiler, note = compile_utils.choose_cpp_compiler()
            outcome = compile_utils.compile_in_place(torch.nn.Linear(2, 2), "cpu")
            patched = list(config.cpp.cxx)
            kept = compile_utils.choose_cpp_compiler()
        print(json.dumps({"gcc": gcc_problem, "gxx": gxx_problem, "compiler": compiler, "note": note,
                          "compiled": outcome.compiled, "outcome_compiler": outcome.cpp_compiler,
                          "outcome_note": outcome.note, "patched": patched, "kept": list(kept)}))
    """, env=dict(os.environ))
    assert out["gcc"] is not None and "does not load" in out["gcc"] and "undefined symbol" in out["gcc"]
    assert out["gxx"] is None
    assert out["compiler"] == "g++" and "'gcc'" in out["note"] and "using 'g++' instead" in out["note"]
    assert out["compiled"] and out["outcome_compiler"] == "g++" and out["outcome_note"] == out["note"]
    assert out["patched"] == [None, "g++"]
    assert out["kept"] == ["g++", None]  # a working configured compiler: kept, silently


# --- bf16 feature extraction -----------------------------------------------------------------------------------

def test_feature_precision_auto_follows_the_hardware(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_has_fast_bf16", lambda: True)
    assert feature_precision("auto", "no", torch.device("cpu")) == "bf16"
    monkeypatch.setattr(hardware, "cpu_has_fast_bf16", lambda: False)
    assert feature_precision("auto", "no", torch.device("cpu")) == "fp32"
    assert feature_precision("auto", "bf16", torch.device("cpu")) == "bf16"
    assert feature_precision("fp32", "bf16", torch.device("cpu")) == "fp32"
    with pytest.raises(ValueError, match="feature_precision"):
        feature_precision("half", "no", torch.device("cpu"))


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_linear_probe_extracts_features_in_the_chosen_precision(tmp_path, precision, monkeypatch):
    seen = []
    original = AutoTransfer.forward_features

    def spy(self, **inputs):
        bf16 = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        seen.append(torch.bfloat16 if bf16 else torch.float32)
        return original(self, **inputs)

    monkeypatch.setattr(AutoTransfer, "forward_features", spy)
    cfg = tiny_config(tmp_path, recipe="linear_probe", epochs=1, **{"method.feature_precision": precision})
    result = hftransfer.train(cfg)
    assert set(seen) == {torch.bfloat16 if precision == "bf16" else torch.float32}
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["feature_precision"] == precision
    assert result.model.head.fc.weight.dtype == torch.float32  # the head trains on float32 copies


def test_bf16_features_are_close_to_fp32_features(tiny_models):
    model = AutoTransfer.from_pretrained("timm:test_convnext", pretrained=False, num_labels=3).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        full = model.forward_features(pixel_values=x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = model.forward_features(pixel_values=x).float()
    assert (half - full).norm() / full.norm() < 3e-2


# --- mixed_precision: auto ------------------------------------------------------------------------------------------

def test_auto_precision_follows_the_hardware_for_text_and_measures_images(monkeypatch, tiny_models):
    from hftransfer.training import auto_precision

    text = AutoTransfer.from_pretrained(tiny_models["transformers_bert"], num_labels=2)
    image = AutoTransfer.from_pretrained("timm:test_convnext", pretrained=False, num_labels=3)
    cpu = torch.device("cpu")
    monkeypatch.setattr(auto_precision, "fast_bf16", lambda device: False)
    assert auto_precision.choose_precision(image, cpu, 16, True, image_size=32).mixed_precision == "no"
    monkeypatch.setattr(auto_precision, "fast_bf16", lambda device: True)
    assert auto_precision.choose_precision(text, cpu, 16, True).mixed_precision == "bf16"
    # Images: a real probe of both precisions, on a copy; the model's weights, BN statistics and the RNG are untouched.
    before = {k: v.clone() for k, v in image.state_dict().items()}
    rng = torch.get_rng_state()
    choice = auto_precision.choose_precision(image, cpu, 16, True, image_size=32)
    assert set(choice.measured) == {"no", "bf16"} and all(v > 0 for v in choice.measured.values())
    assert choice.mixed_precision == max(choice.measured, key=choice.measured.get)
    assert "fp32" in choice.reason and "32 px" in choice.reason
    assert all(torch.equal(before[k], v) for k, v in image.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())
    conv = next(p for p in image.parameters() if p.ndim == 4)
    assert conv.is_contiguous()  # the copy went channels-last, not the model


@pytest.mark.parametrize("faster", ["bf16", "no"])
def test_training_with_auto_precision_uses_and_reports_the_faster(tmp_path, monkeypatch, faster):
    from hftransfer.training import auto_precision

    monkeypatch.setattr(auto_precision, "fast_bf16", lambda device: True)
    speeds = {"no": 10.0, "bf16": 20.0} if faster == "bf16" else {"no": 20.0, "bf16": 10.0}
    seen_sizes = []

    def timed(model, device, batch, size, channels_last, mode):
        seen_sizes.append(size)
        return speeds[mode]

    monkeypatch.setattr(auto_precision, "_samples_per_s", timed)
    result = hftransfer.train(tiny_config(tmp_path, epochs=1, mixed_precision="auto"))
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["mixed_precision"] == faster
    assert summary["mixed_precision_auto"]["measured_samples_per_s"] == speeds
    assert set(seen_sizes) == {32}  # the training resolution (model.image_size), not the pretrained one
    log = (tmp_path / "run" / "train.log").read_text()
    assert f"mixed_precision=auto -> {faster!r}" in log
    card = (result.model_dir / "README.md").read_text()
    assert f"auto -> {faster} (measured" in card


def test_a_resumed_auto_precision_run_keeps_the_precision_it_started_with(tmp_path, monkeypatch):
    from hftransfer.training import auto_precision

    out = tmp_path / "run"
    out.mkdir(parents=True)
    measured = auto_precision.PrecisionChoice("bf16", "measured ...", {"no": 1.0, "bf16": 2.0})
    (out / auto_precision.CHOICE_FILE).write_text(json.dumps(measured.to_dict()))

    def must_not_measure(*args, **kwargs):
        raise AssertionError("a resumed run must not measure again")

    def resolve(resuming: bool):  # what the engine's set-up asks (the model: the patched probe never looks at it)
        return auto_precision.resolve_mixed_precision("auto", None, out, 8, False, None, resuming, cpu_only=False)

    monkeypatch.setattr(auto_precision, "choose_precision", must_not_measure)
    precision, choice = resolve(resuming=True)
    assert precision == "bf16" and choice.measured == {"no": 1.0, "bf16": 2.0}
    assert "kept from the run being resumed" in choice.reason
    with pytest.raises(AssertionError, match="must not measure"):  # nothing to resume: measure afresh
        resolve(resuming=False)
    assert auto_precision.resolve_mixed_precision("no", None, out, 8, False, None, True, False) == ("no", None)


# --- torch.compile with the rest of the engine: gradient checkpointing, bf16, resume, DDP ------------------------

COMPILED = {"model.compile": True, "model.gradient_checkpointing": True, "mixed_precision": "bf16",
            "max_grad_norm": 1.0}


@pytest.mark.integration
def test_compiled_bf16_checkpointed_run_follows_eager_and_resumes_after_sigkill(tmp_path):
    # model.compile with gradient checkpointing under bf16 autocast: the loss curve stays within bf16 noise of the
    # eager run, and a compiled run killed mid-epoch (SIGKILL) resumes to the weights of an uninterrupted compiled run.
    import os
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import load_file

    from helpers import RESUME_SCRIPT

    common = {"epochs": 2, "checkpoint_every_steps": 2, "model.name": COMPILE_MODEL,
              **{k: v for k, v in COMPILED.items() if k != "model.compile"}}
    eager = hftransfer.train(tiny_config(tmp_path / "eager", **common))
    script = tmp_path / "run.py"
    script.write_text(RESUME_SCRIPT)
    clean = tiny_config(tmp_path / "clean", **common, **{"model.compile": True})
    killed = tiny_config(tmp_path / "killed", **common, **{"model.compile": True})
    def env(name: str) -> dict[str, str]:
        # The children share an inductor cache that starts empty; the first (uninterrupted) child runs with CXX=gcc:
        # a C driver whose kernels do not load ("undefined symbol ... ostringstream": a CI child hit it after PEFT's
        # BOFT leaked CXX=gcc into the test process). The engine must swap in a C++ driver; the killed and resumed
        # children (default compiler) must reach the same weights.
        cxx = {"CXX": "gcc"} if name == "clean" and shutil.which("gcc") else {}
        return {**os.environ, "PYTHONHASHSEED": "0", "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"),
                **cxx}

    uninterrupted = subprocess.run([sys.executable, str(script), json.dumps(clean), "0"], env=env("clean"),
                                   capture_output=True, text=True)
    clean_log = Path(clean["output_dir"]) / "train.log"
    assert uninterrupted.returncode == 0, (uninterrupted.stderr[-3000:],
                                           clean_log.read_text()[:2000] if clean_log.exists() else "no train.log")
    # 4 steps per epoch: killed at step 5 (epoch 2), the last checkpoint is step 4.
    first = subprocess.run([sys.executable, str(script), json.dumps(killed), "5"], env=env("killed"),
                           capture_output=True)
    assert first.returncode == -9, first.stderr[-2000:]
    second = subprocess.run([sys.executable, str(script), json.dumps(killed), "0"], env=env("resumed"),
                            capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-3000:]
    log = (Path(killed["output_dir"]) / "train.log").read_text()
    assert "resumed from" in log and "torch.compile: on" in log
    if shutil.which("gcc"):
        assert "using 'g++' instead" in clean_log.read_text()

    metrics = json.loads((Path(clean["output_dir"]) / "metrics.json").read_text())
    assert [r["train_loss"] for r in metrics["history"]] == pytest.approx(_losses(eager), rel=2e-2)
    assert metrics["compile_time_s"] > 0
    wa = load_file(Path(clean["output_dir"]) / "model" / "model.safetensors")
    wb = load_file(Path(killed["output_dir"]) / "model" / "model.safetensors")
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # ~100 s: three compiling processes on a 2-core machine
def test_compiled_two_process_run_matches_the_compiled_single_process_run(tmp_path):
    # accelerate launch --num_processes 2 (gloo, CPU) with model.compile: DDP wraps the in-place compiled model; same
    # global batch, same losses and weights as one compiled process.
    from helpers import launch_single_and_two_process

    base = {"model.name": "timm:test_convnext", "epochs": 2, "optim.name": "sgd", "optim.lr": 0.05,
            "model.compile": True}
    m1, m2, w1, w2 = launch_single_and_two_process(tmp_path, tiny_config(tmp_path / "single", **base),
                                                   tiny_config(tmp_path / "double", **base),
                                                   {"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")})
    assert m1["compile_time_s"] > 0 and m2["compile_time_s"] > 0
    for r1, r2 in zip(m1["history"], m2["history"], strict=True):
        assert r1["train_loss"] == pytest.approx(r2["train_loss"], rel=1e-3)
    for key in w1:
        torch.testing.assert_close(w1[key], w2[key], rtol=1e-3, atol=1e-4)
