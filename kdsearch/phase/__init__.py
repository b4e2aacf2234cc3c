"""The Ray-free stages over a study: its context, the content-keyed store, one run trained or read back, the
teacher and its logit tables, the fixed baselines, `kdsearch train`, and one search trial as a plain call."""
