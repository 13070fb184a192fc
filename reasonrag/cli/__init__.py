"""The `reasonrag` command line: one module per command (or group of commands), wired in `main`."""
