"""What every layer shares and nothing else: the one-line user error, the shared names, where progress goes,
and the plain records (runs, trials and how they end). Imports no other kdsearch package and no torch."""
