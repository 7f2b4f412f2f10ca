# mrqart recipes (https://just.systems; `pip install rust-just` provides `just`)

dir := "/tmp/mrqart-scanner"

# Run the service on a directory (default: a scratch directory for demos)
run *args=dir:
    mkdir -p {{args}}
    python -m mrqart {{args}}

# Write a synthetic session into the directory the service watches
simulate *args=dir:
    python -m mrqart simulate {{args}}

# The whole test suite (browser and fault tests included)
test *args:
    python -m pytest -q {{args}}

# Lint
lint:
    ruff check mrqart tests bench

# All benchmarks; each prints its figures and records them in bench/RESULTS.md
bench:
    for b in bench/bench_*.py; do python "$b" || exit 1; done
