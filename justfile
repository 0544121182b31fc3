# mesh: the commands a person runs, and CI too.

# install with the test and dev tools
install:
    python -m pip install -e '.[test,dev]'

# the test suite (as README.md and CI run it)
test *args:
    pytest {{args}}

# format check, lint and strict types
lint:
    ruff format --check .
    ruff check .
    mypy

# benchmarks against raw pyzmq (comes with the RPC issue)
bench:
    @echo "not yet: benchmarks arrive with RPC calls (issue 3)"

# a local demo mesh and its listing
demo:
    meshctl demo
