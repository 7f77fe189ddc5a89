"""Step-conditioned retrieval: search (SQL), ranking (pure) and the service behind /v1/retrieve."""
