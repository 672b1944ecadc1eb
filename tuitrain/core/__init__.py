"""The vocabulary every layer shares, torch-free and textual-free: run settings (spec), events and
sinks (events), run controls (control), statuses (status), device labels (devices), atomic file
writing (atomic) and the user-facing errors (errors)."""
