from hftransfer.recipes.registry import Recipe, register_recipe


register_recipe(Recipe(
    name="vpt",
    method="vpt",
    description="Visual prompt tuning: prompt tokens in a frozen ViT (eval mode), shallow or deep + a trained head.",
    defaults={"optim": {"name": "sgd", "lr": 0.25, "momentum": 0.9, "weight_decay": 1e-4},
              "scheduler": {"warmup_ratio": 0.1}, "method": {"num_tokens": 10}},
    script="vpt",
))
