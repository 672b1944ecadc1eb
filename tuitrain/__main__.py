from tuitrain.cli import entry

entry()
