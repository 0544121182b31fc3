"""The soak: a million calls and a million events through a pair of node processes,
with their memory and file descriptors compared before and after
(``python -m tests.soak``, ``just soak``; docs/performance.md "Soak")."""
