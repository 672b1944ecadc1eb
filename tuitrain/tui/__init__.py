"""The Textual front end: home screen, live run screen, help. Training runs in thread workers."""
