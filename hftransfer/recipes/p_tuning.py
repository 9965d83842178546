from hftransfer.recipes.registry import Recipe, register_recipe


register_recipe(Recipe(
    name="p_tuning",
    method="p_tuning",
    description="P-tuning: input prompts from an MLP prompt encoder, frozen text encoder + a trained head.",
    defaults={"optim": {"name": "adamw", "lr": 3e-3, "weight_decay": 0.0}, "scheduler": {"warmup_ratio": 0.06},
              "method": {"num_virtual_tokens": 20}},
    script="p_tuning",
))
