"""The training engine: the networks, the loss registry, the recipe's levers and the loop that trains and
evaluates one model. Torch and torchvision only: no Ray, Optuna, MLflow, pydantic or YAML, and no study schema."""
