"""The networks, one file per network, and their configs (configs.py)."""
