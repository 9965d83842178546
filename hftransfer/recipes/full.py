from hftransfer.recipes.registry import Recipe, register_recipe


register_recipe(Recipe(
    name="full",
    method="full",
    description="Full fine-tuning: every parameter trains (AdamW, cosine schedule with warmup).",
    defaults={"optim": {"name": "adamw", "lr": 3e-4, "weight_decay": 0.01}, "scheduler": {"warmup_ratio": 0.05}},
    # Every weight of a pretrained text transformer moves: BERT-style fine-tuning wants a ~10x smaller LR than a CNN.
    family_defaults={"text": {"optim": {"lr": 5e-5}}},
    script="full_finetune",
))
