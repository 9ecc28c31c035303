"""The two jobs: each module wires its graph (``build_*_pipeline``) and runs it (``run``)."""
