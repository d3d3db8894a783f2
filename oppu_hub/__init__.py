"""oppu-hub: One PEFT Per User (OPPU) on the Hugging Face stack."""

__version__ = "0.1.0"
