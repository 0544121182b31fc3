"""The chaos campaign: a namespace LAN of node processes under scripted faults.

``python -m tests.chaos`` (``just chaos``) runs the full campaign; tests/test_chaos.py
runs a short one in the default test suite. See campaign.py for the method.
"""
