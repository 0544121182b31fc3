"""Ready-made node programs (run with ``python -m nodes.NAME``)."""
