"""Judging suspects: every test behind one interface (tests), the kit that combines them into one verdict (kit),
the nulls (null), answers collected elsewhere (answers), the query loop for every kind of suspect (query), many
suspects at once (scan), fingerprint audits (audit) and the evaluation metrics (metrics, correlation)."""
