"""Few-step samplers tuned on a bundle's own network, forward only (docs/samplers.md)."""
