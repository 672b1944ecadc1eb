"""The Textual app: screens and widgets over the same engine and records as the headless CLI."""
