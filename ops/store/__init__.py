"""The incident store: alerts (immutable, with lineage) grouped into incidents."""
