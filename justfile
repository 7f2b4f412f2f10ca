# mrqart recipes (https://just.systems; `pip install rust-just` provides `just`)

scratch := "/tmp/mrqart-scanner"

# Run the service on a directory (default: a scratch directory for demos), e.g. just run /srv/scanner --port 9000
run dir=scratch *args:
    mkdir -p {{dir}}
    python -m mrqart {{dir}} {{args}}

# Write a synthetic session into the directory the service watches, e.g. just simulate /tmp/mrqart-scanner --wrong rest:TR=2000
simulate dir=scratch *args:
    python -m mrqart simulate {{dir}} {{args}}

# The whole test suite (browser and fault tests included)
test *args:
    python -m pytest -q {{args}}

# Lint
lint:
    ruff check mrqart tests bench

# All benchmarks; each prints its figures and records them in bench/RESULTS.md
bench:
    for b in bench/bench_*.py; do python "$b" || exit 1; done
