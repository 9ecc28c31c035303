"""Deterministic generators of sample inputs: tally documents (``tally``), access logs
(``access``)."""
