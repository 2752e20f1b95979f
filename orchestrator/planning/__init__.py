"""Pure planning: what to reserve, where it would land, which rank runs where (no Ray)."""
