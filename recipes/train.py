"""Entry for `accelerate launch`: one training stage from a YAML recipe.

    accelerate launch --config_file recipes/accelerate/zero2.yaml recipes/train.py \\
        recipes/stage1_align.yaml [--override train.max_steps=10 ...] [--resume]

Thin on purpose: parsing, building and training live in vlm.training.cli / vlm.training.
"""

from vlm.training.cli import exit_process, main

if __name__ == "__main__":
    exit_process(main())
