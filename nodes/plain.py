"""A node with no services: it joins, answers handshakes and leaves cleanly.

MESH_NAME=demo MESH_PORT=7000 python -m nodes.plain
"""

from nodes._program import run

if __name__ == "__main__":
    run()
