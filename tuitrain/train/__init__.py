"""The training engine: data (data.py), models (models.py), the loop (loop.py) and its events
(events.py). Knows nothing of any UI and never imports textual."""
