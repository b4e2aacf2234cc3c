"""MLflow: the runs a search writes and the registered student. The only package that imports MLflow; its
store_uri module does not (the cheap checks before a search use it), so this file imports nothing."""
