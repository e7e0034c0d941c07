"""Shared fixtures. Everything runs over loopback; nothing reaches the internet."""
