"""The study around lib25d: what the book, the benchmarks and the tests need and a researcher's import does not.

It uses :mod:`lib25d`; :mod:`lib25d` never imports it.
"""
