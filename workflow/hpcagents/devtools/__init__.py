"""Tools for the developers of hpcagents (not used by a campaign)."""
