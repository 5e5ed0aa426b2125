"""Tables (Markdown, CSV, JSON) and figures of evaluations and experiment runs."""
