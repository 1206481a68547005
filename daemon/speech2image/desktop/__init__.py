"""The desktop: notifications on the session bus."""
