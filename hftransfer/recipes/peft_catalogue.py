"""Training defaults of the PEFT catalogue methods (their own options live in hftransfer/methods/<name>.py)."""

from hftransfer.recipes.registry import Recipe, register_recipe


_ADAMW = {"name": "adamw", "weight_decay": 0.01}
_WARMUP = {"warmup_ratio": 0.05}
# lr per method: (IA)^3 and VeRA train scaling vectors only and want larger steps (their papers: 3e-3 and ~1e-2).
_LR = {"ia3": 3e-3, "loha": 1e-3, "lokr": 1e-3, "vera": 5e-3, "oft": 1e-3, "boft": 1e-3}
_WHAT = {
    "ia3": "(IA)^3 (PEFT): learned vectors rescale block activations; fewest trained weights; mergeable.",
    "loha": "LoHa (PEFT): low-rank Hadamard-product updates on Linear/Conv2d layers; mergeable.",
    "lokr": "LoKr (PEFT): low-rank Kronecker-product updates on Linear/Conv2d layers; mergeable.",
    "vera": "VeRA (PEFT): shared frozen random projections + trained scaling vectors; Linear layers only.",
    "oft": "OFT (PEFT): block-diagonal orthogonal transforms of Linear / 1x1-conv inputs; mergeable.",
    "boft": "BOFT (PEFT): butterfly-factorised orthogonal transforms; mergeable.",
}

for _name, _lr in _LR.items():
    register_recipe(Recipe(name=_name, method=_name, description=_WHAT[_name],
                           defaults={"optim": {**_ADAMW, "lr": _lr}, "scheduler": dict(_WARMUP)}))
