"""The machine: GPU memory and processes."""
