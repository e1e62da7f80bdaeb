"""Optional training-run tracking (radassist[mlflow]); see radassist.training.run_events.observers_for."""
