"""Side-by-side benchmarks; each writes benchmarks/results/<name>.json and a PNG."""
