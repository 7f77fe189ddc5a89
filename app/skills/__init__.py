"""Skills as a library: immutable versions, rollback and export."""
