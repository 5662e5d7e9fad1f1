"""Benchmarks: `python -m bot bench` (many channels through the real pipeline, `channels`) and
`python -m bot bench --engine …` (the engines side by side, `engines`)."""
