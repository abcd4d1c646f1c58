"""The machine the panel runs on: CPU, memory, load and our processes' share (the only psutil user)."""
