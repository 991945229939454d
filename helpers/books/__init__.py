"""Books to passages: read, clean, structure, chunk."""
