"""Living as a service: systemd notification, the instance lock, persistent state."""
