"""HTTP only: routes, wire schemas and dependencies."""
