"""Model training (run in a separate process by the app; no Qt)."""
