from hftransfer.recipes.registry import Recipe, register_recipe


register_recipe(Recipe(
    name="prompt_tuning",
    method="prompt_tuning",
    description="Prompt tuning: soft prompt tokens at the input of a frozen text encoder + a trained head.",
    defaults={"optim": {"name": "adamw", "lr": 3e-2, "weight_decay": 0.0}, "scheduler": {"warmup_ratio": 0.06},
              "method": {"num_virtual_tokens": 20}},
    script="prompt_tuning",
))
