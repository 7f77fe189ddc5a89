"""Wire schemas: what clients send and receive."""
