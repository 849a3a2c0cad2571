"""Training loops and their configs."""
