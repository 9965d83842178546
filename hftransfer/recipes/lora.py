from hftransfer.recipes.registry import Recipe, register_recipe


register_recipe(Recipe(
    name="lora",
    method="lora",
    description="LoRA adapters (PEFT) on the backbone's block layers + a trained head; DoRA with method.use_dora.",
    defaults={"optim": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.01}, "scheduler": {"warmup_ratio": 0.05}},
    script="lora_finetune",
))
