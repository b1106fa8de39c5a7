"""One module per command: its options, the one library call, and how its answer is shown."""
