from hftransfer.recipes.registry import Recipe, register_recipe


register_recipe(Recipe(
    name="linear_probe",
    method="linear_probe",
    description="Linear probing: frozen backbone, features cached once, only the head trains.",
    defaults={"optim": {"name": "adamw", "lr": 3e-3, "weight_decay": 1e-4}, "augment": "none"},
    script="linear_probe",
))
