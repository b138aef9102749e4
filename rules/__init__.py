"""Rules: a declarative YAML rule language, its loader and a vectorised batch evaluator."""
