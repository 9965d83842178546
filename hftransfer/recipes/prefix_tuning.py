from hftransfer.recipes.registry import Recipe, register_recipe


register_recipe(Recipe(
    name="prefix_tuning",
    method="prefix_tuning",
    description="Prefix tuning (P-Tuning v2): fresh prompt tokens before every layer of a frozen text encoder + head.",
    defaults={"optim": {"name": "adamw", "lr": 1e-2, "weight_decay": 0.0}, "scheduler": {"warmup_ratio": 0.06},
              "method": {"num_virtual_tokens": 20}},
    script="prefix_tuning",
))
