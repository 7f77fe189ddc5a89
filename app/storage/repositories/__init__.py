"""All SQL but vector search: small functions that take a session and only flush."""
