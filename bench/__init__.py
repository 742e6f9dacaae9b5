"""Benchmarks of tidemark on a real local stack (run as modules: `python -m bench.<name>`).

They live outside the `tidemark` package on purpose: they start their own private stacks and
take minutes, so neither the tests nor the installed package should pull them in.
"""
