"""Thinking inference."""
