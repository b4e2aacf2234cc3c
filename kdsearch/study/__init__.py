"""A study file: its typed schema, the reading and validation of the YAML, and its search space. Reads the
engine's loss and model registries (to validate names), and nothing above them."""
