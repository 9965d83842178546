"""Issue 19's before/after on a CPU without native bf16: the old explicit `bf16` vs the example config's `auto`.

On a CPU that has AVX-512 bf16 or AMX, emulate one without: oneDNN and ATen limited to AVX2, the probe patched.
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python bench/bf16_without_native.py bf16 /tmp/bf16
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python bench/bf16_without_native.py auto /tmp/auto
Needs ../shared/data/sst2 and the packaged MiniLM; prints the precision that ran and the training samples/s.
"""
import json
import sys
import time

import hftransfer.training.auto_precision as ap
import hftransfer.training.engine as engine
import hftransfer.utils.hardware as hw  # noqa: E402


for mod in (hw, ap, engine):
    if hasattr(mod, "fast_bf16"):
        mod.fast_bf16 = lambda device: False
import hftransfer  # noqa: E402
from hftransfer.training.config import TrainConfig  # noqa: E402


precision, out = sys.argv[1], sys.argv[2]
overrides = [f"mixed_precision={precision}", "data.max_train_samples=256", "data.max_eval_samples=200", "epochs=1",
             f"output_dir={out}", "progress_bar=false"]
config = TrainConfig.from_yaml("recipes/configs/minilm_sst2_lora.yaml", overrides)
t = time.perf_counter()
result = hftransfer.train(config)
m = json.load(open(f"{out}/metrics.json"))
print(json.dumps({"precision_asked": precision, "ran": m["mixed_precision"],
                  "train_samples_per_s": m["history"][-1]["train_samples_per_s"], "wall_s": time.perf_counter() - t}))
