"""Neural network modules of the Lip Forcing DiT."""
