"""Hostile input: what an attacker or a broken export may send, and what Ballast must do with it."""
