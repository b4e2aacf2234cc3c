"""Commands beside the search: the exported student (`kdsearch export`), the benchmark (`kdsearch bench`) and
the evidence header every measured figure carries."""
