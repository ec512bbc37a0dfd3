"""The benchmarks: each a script run as `python bench/<name>.py` (see its docstring)."""
