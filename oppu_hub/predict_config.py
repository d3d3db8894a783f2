"""The settings of ``oppu-hub predict`` (:func:`oppu_hub.inference.predict` runs them; torch-free)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from .decoding_config import DecodingOptions
from .methods import parse_method
from .tasks import get_task


@dataclass
class PredictConfig(DecodingOptions):
    """Predictions for one method (``oppu-hub predict``).

    Args:
        task / data_dir / split: which queries.
        base_dir: the task-adapted base (or any base model).
        adapters_dir: users' adapters (``train-users`` output folder); omit for no adapters (non-personalized).
        k: BM25-retrieved history items in each prompt.
        profile: put the user's profile text in each prompt.
        random_history: fill the ``k`` history slots with random items of other users (the baseline).
        history_format: the history format the adapters must have been trained with (``full``/``input``/``output``).
        allow_setting_mismatch: use adapters trained with another k / profile / history format than requested
            (refused by default: each method pairs with adapters trained the same way).
        users / max_users: restrict to these users / the first N users.
        output: prediction file (LaMP format); default ``{base_dir}/predictions/...``.
        batch_size: prompts per ``generate`` call.
        max_adapters: resident adapters at most (LRU).
        load_in_4bit: load the base quantized to NF4 (bitsandbytes), as adapters trained with
            ``train-users --load_in_4bit`` need.
        contrastive: contrastive personal decoding of each user's adapter against the base (needs adapters).
        prior: label scores shifted by each user's label prior (classification and rating tasks).
        answers / contrast_* / prior_*: :class:`~oppu_hub.decoding_config.DecodingOptions`.
        method: a method of ``oppu-hub eval`` (:mod:`oppu_hub.methods`) instead of the flags above: it sets ``k``,
            ``profile``, ``random_history``, ``contrastive``, ``prior`` and (prior and contrastive methods)
            ``answers`` as eval does (:meth:`~oppu_hub.methods.Method.prediction_settings`); a flag given with
            another value is refused. Methods with users' adapters need ``adapters_dir``, the others refuse it;
            baselines and the pooled adapter are eval's alone.
    """

    task: str = field(default="LaMP-2N", metadata={"help": "LaMP task"})
    data_dir: str = field(default="data", metadata={"help": "LaMP-format data folder"})
    split: str = field(default="test", metadata={"help": "split to predict: test | dev | train"})
    base_dir: str = field(default="runs/base/LaMP-2N/k0", metadata={"help": "base model folder or id"})
    adapters_dir: str | None = field(default=None, metadata={"help": "folder of users' adapters (OPPU)"})
    k: int = field(default=0, metadata={"help": "BM25-retrieved history items in the prompt"})
    profile: bool = field(default=False, metadata={"help": "put the user's profile in the prompt"})
    profiles_dir: str = field(default="runs/profiles", metadata={"help": "profile cache"})
    random_history: bool = field(default=False, metadata={"help": "k random items of other users instead"})
    history_format: str = field(default="full", metadata={"help": "history format the adapters were trained with"})
    allow_setting_mismatch: bool = field(default=False, metadata={
        "help": "use adapters trained with another k/profile/history format than requested"})
    users: list[str] | None = field(default=None, metadata={"help": "only these user ids"})
    max_users: int | None = field(default=None, metadata={"help": "only the first N users"})
    output: str | None = field(default=None, metadata={"help": "prediction file to write (LaMP format)"})
    batch_size: int = field(default=8, metadata={"help": "prompts per generate call"})
    max_prompt_length: int = field(default=384, metadata={"help": "token budget of one prompt"})
    max_adapters: int = field(default=16, metadata={"help": "resident adapters at most (LRU)"})
    load_in_4bit: bool = field(default=False, metadata={"help": "load the base quantized to NF4 (bitsandbytes)"})
    seed: int = field(default=0, metadata={"help": "seed of the random-history baseline"})
    contrastive: bool = field(default=False, metadata={"help": "contrastive decoding against the base"})
    prior: bool = field(default=False, metadata={"help": "label scores + each user's label prior"})
    method: str | None = field(default=None, metadata={
        "help": "an eval method (rag-k2, oppu-k1, oppu-cd-k1, prior-np-k0...): sets k, profile, random_history, "
                "contrastive, prior and answers as eval does"})

    def __post_init__(self) -> None:
        task = get_task(self.task)
        self.task = task.name  # canonical, and an unknown task fails here
        if self.method:
            self._apply_method()
        if self.contrastive and not self.adapters_dir:
            raise ValueError("--contrastive contrasts users' adapters with the base: give --adapters_dir")
        if self.contrastive and self.answers == "labels" and task.labels:
            raise ValueError("--contrastive applies to generated answers, not to --answers labels")
        if self.prior and not task.labels:
            raise ValueError(f"--prior scores labels; {task.name} has none (a generation task)")

    def _apply_method(self) -> None:
        """Set what :attr:`method` decides, refusing a flag given with another value."""
        method = parse_method(self.method)
        if method.baseline or method.pooled:
            what = "a model-free baseline" if method.baseline else "the pooled adapter"
            raise ValueError(f"--method {method.name}: {what} is run by oppu-hub eval")
        if method.oppu != bool(self.adapters_dir):
            raise ValueError(f"--method {method.name} {'needs' if method.oppu else 'takes no'} --adapters_dir")
        defaults = {f.name: f.default for f in fields(self)}
        for name, value in method.prediction_settings(self.answers).items():
            given = getattr(self, name)
            if name != "answers" and given not in (defaults[name], value):
                raise ValueError(f"--{name} {given} contradicts --method {method.name}")
            setattr(self, name, value)
        self.method = method.name
