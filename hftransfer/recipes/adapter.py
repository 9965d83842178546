from hftransfer.recipes.registry import Recipe, register_recipe


register_recipe(Recipe(
    name="adapter",
    method="adapter",
    description="Bottleneck adapters (houlsby/pfeiffer/parallel) on transformer blocks, residual 1x1-conv adapters "
                "after CNN blocks; frozen backbone, trained adapters + head. Not mergeable (nonlinear).",
    defaults={"optim": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.01}, "scheduler": {"warmup_ratio": 0.05}},
    # CNN blocks are narrow (16-320 channels in EfficientNet-Lite0): a wider bottleneck than on 384+-wide tokens.
    family_defaults={"image": {"method": {"reduction_factor": 4}}},
    script="adapter_finetune",
    example_model="packaged:efficientnet_lite0",
))
