"""Moderation: per-label toxicity scores from several offline backends, one verdict.

``combined.build_moderator`` is the entry point; each backend is a module of its own.
"""
