"""Legal export: a case as a signed evidence bundle, its custody report and its guide."""
