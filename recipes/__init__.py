"""YAML recipes, accelerate / DeepSpeed configs and `accelerate launch` entry scripts."""
