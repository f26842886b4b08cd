"""``ems bench``: measurements on the user's own hardware, one module per benchmark.

Each module exposes ``register_bench(bench_subparsers)``; its handler imports what it measures lazily.
"""
