"""What every facegrid package shares: the root of its errors (facegrid.errors)."""
