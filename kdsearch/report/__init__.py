"""Presentation: the report's content and files, the terminal's tables, the plots and the statistics over seeds.
Imports only kdsearch.core, and never torch, Ray, Optuna or MLflow."""
