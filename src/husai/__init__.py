"""husai."""
