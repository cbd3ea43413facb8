"""Evaluation: measurements of the library, used by `personavlm bench`. Nothing in the core
imports this package."""
