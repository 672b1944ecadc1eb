"""The training engine: data (data.py), models (models.py), the device a run trains on (device.py), its optimizer
(optim.py), the loop (loop.py) and what a worker does (worker.py). Knows nothing of any UI and never imports
textual."""
