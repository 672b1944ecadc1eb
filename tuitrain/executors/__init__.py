"""How a preset's runs are trained: the scheduler (scheduler.py) and the workers it hands runs to."""
