"""The search through Ray Tune and Optuna: Ray itself, the searcher, the Tuner, the confirmation over seeds, the
importances, the search's record on disk and the pipeline, one call per stage. The only package that imports
Ray or Optuna."""
