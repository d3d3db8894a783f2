"""oppu-hub: One PEFT Per User (OPPU) on the Hugging Face stack."""

import logging

__version__ = "0.1.0"

# bitsandbytes (the [4bit] extra, imported by peft) warns on every import on AVX512-BF16 CPUs that it could not
# fetch an optional CPU kernel from the Hub (the `kernels` package); its built-in CPU kernel runs instead.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
