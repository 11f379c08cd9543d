"""The search: YAML search spaces turned into Optuna suggestions (:mod:`splitsearch.search.space`)."""
