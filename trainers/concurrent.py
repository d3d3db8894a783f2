"""Concurrent per-user LoRA training: many users' adapters trained in the same forward/backward passes over one
shared frozen base (the mLoRA idea), used by ``train-users --concurrent N``.

How it works
------------
* **Slots.** ``N`` users are trained at once, each in a *slot*. Every adapted linear layer of the base (peft's
  ``target_modules`` matching, resolved by peft itself) is wrapped by :class:`MultiLoraLinear`, which holds the LoRA
  weights of all slots stacked: ``A`` is ``(N, r, in)``, ``B`` is ``(N, out, r)``. A micro-batch mixes rows of
  different users; each row carries its slot index, and the layer gathers that row's ``A``/``B`` (a per-row
  gather, as Punica/S-LoRA's BGMV kernels do) and adds ``scale * x A_s^T B_s^T`` to the frozen base output. The
  base matmuls run once over the whole batch. When a user finishes, its adapter is saved and the slot is refilled
  with the next user (continuous batching), so slots never idle while users remain.
* **Losses never mix.** Each user's loss is the mean cross-entropy over *its own* label tokens of the step (what
  ``SFTTrainer`` computes for a batch of that user alone: completion + EOS for prompt/completion rows, every token
  for text rows); the step minimises the *sum* of the users' losses. Since user ``u``'s parameters only touch
  user ``u``'s rows, ``d(sum)/d(params_u) = d(loss_u)/d(params_u)``: gradients never flow between users.
* **Per-user optimiser.** A vectorised AdamW over the stacked weights, elementwise identical to
  ``torch.optim.AdamW`` (betas 0.9/0.999, eps 1e-8, the Trainer's weight decay 0), with a per-slot step count,
  per-slot gradient-norm clipping (``max_grad_norm`` 1.0, as the Trainer) and a per-slot linear schedule with the
  Trainer path's warmup (:func:`trainers.common.lr_factor`: none below 20 steps). A slot whose
  user has no batch in a step does not step at all.
* **Same data, same order, same init as alone.** Rows are tokenized as ``SFTTrainer`` does (EOS appended,
  completion-only labels, ``max_length`` truncation keeping the start, fully masked rows dropped). Each user's
  batch order comes from its own ``torch.Generator`` seeded with ``config.seed`` (a fresh permutation per epoch),
  independent of the other users and of timing. Every user starts from the LoRA init ``get_peft_model`` gives after
  ``set_seed(config.seed)`` -- exactly what :func:`trainers.user.train_user` starts from.
* **"Alone"** means this same loop with ``N = 1`` (:func:`train_lora_users` with ``slots=1``): a concurrent run
  gives each user's adapter equal to that up to float summation order (tested to ``allclose``). Against the
  ``SFTTrainer`` path the math is the same (loss, AdamW, clipping, schedule, init); only the shuffle differs, so
  with one batch per epoch the adapters agree closely (tested), otherwise the loss curves agree statistically.
* **Cheaper than the Trainer path** beyond batching users together: rows of a step are sorted by length and split
  into micro-batches of at most ``max_batch_tokens`` padded tokens (little padding, bounded memory, gradients
  summed: the same math as one batch); the LM head runs only at positions that carry a label (for LaMP's short
  answers that skips ~1/5 of the model's FLOPs); bf16 autocast where the CPU/GPU has it (fp32 master weights);
  no per-user model, Trainer, accelerator or dataset objects.

Saved adapters are standard PEFT folders (``adapter_config.json`` + ``adapter_model.safetensors`` with peft's
key names) plus the same ``oppu.json`` record as ``train_user`` writes, written atomically; they load with
``PeftModel.from_pretrained``. Only LoRA is trained here (IA3 / prompt tuning use the sequential path), and there
are no mid-user checkpoints: an interrupted run re-trains the users that had not finished (finished ones are
skipped). ``--update`` of existing adapters goes through the sequential path.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from peft import get_peft_model
from safetensors.torch import save_file
from torch import nn
from transformers import set_seed

from oppu_hub.adapters import AdapterRecord
from oppu_hub.io import atomic_dir
from oppu_hub.prompts import PromptBuilder, history_examples
from oppu_hub.tasks import get_task

from .common import TrainingConfig, bf16_available, lr_factor

IGNORE = -100
MAX_GRAD_NORM = 1.0
BETAS = (0.9, 0.999)
EPS = 1e-8
WEIGHT_DECAY = 0.0


# ---------------------------------------------------------------------------------------------- the layer


class _Route:
    """Which slot each row of the current micro-batch belongs to (shared by all wrapped layers)."""

    slots: torch.Tensor | None = None


class MultiLoraLinear(nn.Module):
    """A frozen ``nn.Linear`` plus ``N`` LoRA adapters; row ``i`` of the input uses adapter ``route.slots[i]``.

    ``A``: ``(N, r, in)``, ``B``: ``(N, out, r)``; output ``base(x) + scale * (dropout(x) @ A_s^T) @ B_s^T``, the
    same as peft's ``lora.Linear`` for the adapter of that row.
    """

    def __init__(self, base: nn.Linear, slots: int, r: int, scale: float, dropout: float, route: _Route) -> None:
        super().__init__()
        self.base = base
        self.scale = scale
        self.dropout = dropout
        self.route = route
        self.A = nn.Parameter(torch.zeros(slots, r, base.in_features))
        self.B = nn.Parameter(torch.zeros(slots, base.out_features, r))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        slots = self.route.slots
        if slots is None:
            return out
        h = F.dropout(x, self.dropout, self.training) if self.dropout else x
        a = self.A.index_select(0, slots).to(h.dtype)  # (rows, r, in)
        b = self.B.index_select(0, slots).to(h.dtype)  # (rows, out, r)
        delta = torch.bmm(torch.bmm(h, a.transpose(1, 2)), b.transpose(1, 2))
        return out + (delta * self.scale).to(out.dtype)


# ---------------------------------------------------------------------------------------------- data


@dataclass
class Row:
    """One tokenized training example: ids and labels (``-100`` where there is no loss)."""

    input_ids: list[int]
    labels: list[int]


def tokenize_rows(rows: Sequence[Mapping[str, str]], tokenizer: Any, max_length: int | None) -> list[Row]:
    """Tokenize ``{"prompt", "completion"}`` / ``{"text"}`` rows exactly as ``SFTTrainer`` prepares them."""
    eos = tokenizer.eos_token
    out = []
    for row in rows:
        if "prompt" in row:
            completion = row["completion"] if row["completion"].endswith(eos) else row["completion"] + eos
            prompt_ids = tokenizer(row["prompt"])["input_ids"]
            ids = tokenizer(row["prompt"] + completion)["input_ids"]
            n = 0
            for a, b in zip(prompt_ids, ids, strict=False):
                if a != b:
                    break
                n += 1
            labels = [IGNORE] * n + ids[n:]
        else:
            text = row["text"] if row["text"].endswith(eos) else row["text"] + eos
            ids = tokenizer(text)["input_ids"]
            labels = list(ids)
        if max_length is not None:
            ids, labels = ids[:max_length], labels[:max_length]
        if any(t != IGNORE for t in labels[1:]):  # no label after the shift: no loss (SFTTrainer drops it too)
            out.append(Row(list(ids), labels))
    return out


def batch_plan(n_rows: int, batch_size: int, epochs: float, seed: int) -> list[list[int]]:
    """The row indices of each optimizer step: a fresh seeded permutation per epoch, ``ceil(epochs * steps per
    epoch)`` steps in all (as ``Trainer`` counts them for ``gradient_accumulation_steps=1``)."""
    per_epoch = math.ceil(n_rows / batch_size)
    total = max(1, math.ceil(epochs * per_epoch))
    gen = torch.Generator().manual_seed(seed)
    plan: list[list[int]] = []
    while len(plan) < total:
        perm = torch.randperm(n_rows, generator=gen).tolist()
        plan += [perm[i:i + batch_size] for i in range(0, n_rows, batch_size)]
    return plan[:total]


# ---------------------------------------------------------------------------------------------- jobs & results


@dataclass
class UserJob:
    """One user to train: their rows (``history_examples`` output) and where the adapter goes."""

    user_id: str
    rows: list[dict[str, str]]
    folder: Path
    record: dict[str, Any] = field(default_factory=dict)  # AdapterRecord fields (user, history ids...)
    loss_weight: float = 1.0


@dataclass
class UserResult:
    user_id: str
    folder: Path
    losses: list[float]
    tokens: int
    seconds: float
    error: BaseException | None = None


@dataclass
class _Slot:
    job: UserJob
    rows: list[Row]
    plan: list[list[int]]
    started: float
    step: int = 0
    losses: list[float] = field(default_factory=list)
    tokens: int = 0


# ---------------------------------------------------------------------------------------------- the trainer


class ConcurrentLoraTrainer:
    """Trains LoRA adapters of up to ``slots`` users at a time on one frozen ``model`` (see the module doc).

    ``model`` is wrapped in place while :meth:`run` runs and left exactly as it came afterwards.
    """

    def __init__(self, config: TrainingConfig, peft_config: Any, model: nn.Module, tokenizer: Any, slots: int,
                 max_batch_tokens: int = 2048) -> None:
        if getattr(peft_config, "peft_type", None) is None or str(peft_config.peft_type).split(".")[-1] != "LORA":
            raise ValueError("concurrent training supports LoRA adapters only")
        if getattr(peft_config, "use_rslora", False) or getattr(peft_config, "use_dora", False):
            raise ValueError("concurrent training supports plain LoRA (no rsLoRA/DoRA)")
        self.config = config
        self.peft_config = peft_config
        self.model = model
        self.tokenizer = tokenizer
        self.slots = max(1, int(slots))
        self.max_batch_tokens = max_batch_tokens
        self.max_length = config.max_prompt_length + 128  # as sft_config
        self.bf16 = config.precision == "bf16" or (config.precision == "auto" and bf16_available())
        self.device = next(model.parameters()).device
        self.route = _Route()
        self.layers: dict[str, MultiLoraLinear] = {}
        self.init: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.trained_tokens = 0
        self.padded_tokens = 0

    # -- model surgery -----------------------------------------------------------------------------------

    def _initial_weights(self) -> None:
        """The LoRA init ``train_user`` would start from: ``set_seed(seed)`` then ``get_peft_model``."""
        set_seed(self.config.seed)
        peft_model = get_peft_model(self.model, copy.deepcopy(self.peft_config))
        try:
            for name, module in peft_model.base_model.model.named_modules():
                if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
                    self.init[name] = (module.lora_A["default"].weight.detach().clone(),
                                       module.lora_B["default"].weight.detach().clone())
        finally:
            peft_model.base_model.unload()
        if not self.init:
            raise ValueError(f"no module of the base matches target_modules {self.peft_config.target_modules}")

    @contextlib.contextmanager
    def _wrapped(self) -> Iterator[None]:
        cfg = self.peft_config
        originals: dict[str, nn.Module] = {}
        try:
            for name, (a, _b) in self.init.items():
                parent_name, _, child = name.rpartition(".")
                parent = self.model.get_submodule(parent_name)
                base = getattr(parent, child)
                layer = MultiLoraLinear(base, self.slots, a.shape[0], cfg.lora_alpha / cfg.r, cfg.lora_dropout,
                                        self.route).to(self.device)
                originals[name] = base
                setattr(parent, child, layer)
                self.layers[name] = layer
            yield
        finally:
            for name, base in originals.items():
                parent_name, _, child = name.rpartition(".")
                setattr(self.model.get_submodule(parent_name), child, base)
            self.layers.clear()
            self.route.slots = None

    # -- optimizer -----------------------------------------------------------------------------------------

    def _params(self) -> list[nn.Parameter]:
        return [p for layer in self.layers.values() for p in (layer.A, layer.B)]

    def _reset_slot(self, s: int) -> None:
        with torch.no_grad():
            for name, layer in self.layers.items():
                a, b = self.init[name]
                layer.A[s].copy_(a)
                layer.B[s].copy_(b)
            for p in self._params():
                state = self.state[p]
                state["m"][s].zero_()
                state["v"][s].zero_()
        self.steps[s] = 0

    @torch.no_grad()
    def _optimizer_step(self, active: torch.Tensor, lrs: torch.Tensor) -> None:
        """AdamW (as ``torch.optim.AdamW``) with per-slot clipping, step count and learning rate; only ``active``
        slots change."""
        params = self._params()
        sq = torch.zeros(self.slots, dtype=torch.float64)
        for p in params:
            if p.grad is not None:
                sq += p.grad.double().pow(2).flatten(1).sum(1)
        clip = (MAX_GRAD_NORM / (sq.sqrt() + 1e-6)).clamp(max=1.0).float()
        self.steps += active.long()
        t = self.steps.clamp(min=1).double()
        bc1 = (1 - BETAS[0] ** t).float()
        bc2_sqrt = (1 - BETAS[1] ** t).sqrt().float()
        step_size = (lrs / bc1) * active.float()
        for p in params:
            if p.grad is None:
                continue
            view = (-1,) + (1,) * (p.dim() - 1)
            g = p.grad * clip.view(view)
            state = self.state[p]
            keep = active.view(view)
            m_new = state["m"] * BETAS[0] + g * (1 - BETAS[0])
            v_new = state["v"] * BETAS[1] + g * g * (1 - BETAS[1])
            state["m"] = torch.where(keep, m_new, state["m"])
            state["v"] = torch.where(keep, v_new, state["v"])
            if WEIGHT_DECAY:
                p.mul_(1 - (lrs * WEIGHT_DECAY * active.float()).view(view))
            denom = state["v"].sqrt() / bc2_sqrt.view(view) + EPS
            p.sub_(step_size.view(view) * state["m"] / denom)
            p.grad = None

    # -- training ------------------------------------------------------------------------------------------

    def _forward_backward(self, batch: list[tuple[int, Row, float]]) -> tuple[torch.Tensor, int]:
        """One step's rows ``(slot, row, weight)``: micro-batches of similar length; per-slot summed losses."""
        loss_sums = torch.zeros(self.slots)
        decoder = getattr(self.model, self.model.base_model_prefix)
        head = self.model.get_output_embeddings()
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        order = sorted(range(len(batch)), key=lambda i: len(batch[i][1].input_ids))
        micro: list[list[int]] = [[]]
        for i in order:
            length = len(batch[i][1].input_ids)
            if micro[-1] and length * (len(micro[-1]) + 1) > self.max_batch_tokens:
                micro.append([])
            micro[-1].append(i)
        tokens = 0
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        for idx in micro:
            rows = [batch[i] for i in idx]
            width = max(len(r.input_ids) for _, r, _ in rows)
            ids = torch.full((len(rows), width), pad, dtype=torch.long)
            labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for j, (_, r, _) in enumerate(rows):
                ids[j, :len(r.input_ids)] = torch.tensor(r.input_ids)
                labels[j, :len(r.labels)] = torch.tensor(r.labels)
                mask[j, :len(r.input_ids)] = 1
            tokens += int(mask.sum())
            self.padded_tokens += ids.numel()
            slots = torch.tensor([s for s, _, _ in rows], device=self.device)
            weights = torch.tensor([w for _, _, w in rows])
            self.route.slots = slots
            with autocast:
                hidden = decoder(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).last_hidden_state
                target = labels[:, 1:]
                keep = target != IGNORE
                logits = head(hidden[:, :-1][keep.to(self.device)])  # the LM head only where there is a loss
            nll = F.cross_entropy(logits.float(), target[keep].to(self.device), reduction="none")
            row_of = keep.nonzero()[:, 0]
            tok_weight = (weights / self.counts[slots.cpu()])[row_of].to(nll.device)
            (nll * tok_weight).sum().backward()
            loss_sums.index_add_(0, slots.cpu()[row_of], nll.detach().float().cpu())
        self.route.slots = None
        return loss_sums, tokens

    def run(self, jobs: Iterable[UserJob | BaseException], on_result: Callable[[UserResult], None]) -> None:
        """Train every job (a ``BaseException`` item is a user that failed before training and is passed through
        as a failed result). ``on_result`` gets each user's result as soon as it finishes (its adapter saved)."""
        was_training = self.model.training
        grads = [p.requires_grad for p in self.model.parameters()]
        try:
            self._initial_weights()
            for p in self.model.parameters():
                p.requires_grad_(False)
            self.model.train()
            with self._wrapped():
                params = self._params()
                self.state = {p: {"m": torch.zeros_like(p), "v": torch.zeros_like(p)} for p in params}
                self.steps = torch.zeros(self.slots, dtype=torch.long)
                self._loop(iter(jobs), on_result)
        finally:
            for p, g in zip(self.model.parameters(), grads, strict=True):
                p.requires_grad_(g)
            self.model.train(was_training)

    def _loop(self, jobs: Iterator[UserJob | BaseException], on_result: Callable[[UserResult], None]) -> None:
        slots: list[_Slot | None] = [None] * self.slots
        cfg = self.config
        exhausted = False
        while True:
            for s in range(self.slots):  # refill free slots (continuous batching)
                while slots[s] is None and not exhausted:
                    job = next(jobs, None)
                    if job is None:
                        exhausted = True
                        break
                    if isinstance(job, BaseException):
                        on_result(UserResult(getattr(job, "user_id", "?"), Path(), [], 0, 0.0, job))
                        continue
                    start = time.perf_counter()
                    try:
                        rows = tokenize_rows(job.rows, self.tokenizer, self.max_length)
                        if not rows:
                            raise ValueError("the user has no history to train on")
                    except Exception as e:  # noqa: BLE001 - recorded as this user's failure
                        on_result(UserResult(job.user_id, job.folder, [], 0, 0.0, e))
                        continue
                    plan = batch_plan(len(rows), cfg.per_device_train_batch_size, cfg.num_train_epochs, cfg.seed)
                    self._reset_slot(s)
                    slots[s] = _Slot(job, rows, plan, start)
            live = [s for s in range(self.slots) if slots[s] is not None]
            if not live:
                return
            batch: list[tuple[int, Row, float]] = []
            self.counts = torch.ones(self.slots)
            lrs = torch.zeros(self.slots)
            active = torch.zeros(self.slots, dtype=torch.bool)
            for s in live:
                slot = slots[s]
                rows = [slot.rows[i] for i in slot.plan[slot.step]]
                batch += [(s, r, slot.job.loss_weight) for r in rows]
                self.counts[s] = max(1, sum(t != IGNORE for r in rows for t in r.labels[1:]))
                lrs[s] = cfg.learning_rate * lr_factor(slot.step, len(slot.plan))
                active[s] = True
            try:
                loss_sums, tokens = self._forward_backward(batch)
                self._optimizer_step(active, lrs)
            except Exception as e:  # noqa: BLE001 - a failing step fails the users in it, not the run
                for p in self._params():
                    p.grad = None
                for s in live:
                    slot = slots[s]
                    on_result(UserResult(slot.job.user_id, slot.job.folder, slot.losses, slot.tokens,
                                         time.perf_counter() - slot.started, e))
                    slots[s] = None
                continue
            self.trained_tokens += tokens
            for s in live:
                slot = slots[s]
                slot.losses.append(float(loss_sums[s] / self.counts[s]))
                slot.tokens += sum(len(slot.rows[i].input_ids) for i in slot.plan[slot.step])
                slot.step += 1
                if slot.step == len(slot.plan):
                    slots[s] = None
                    error = None
                    try:
                        self._save(s, slot)
                    except Exception as e:  # noqa: BLE001
                        error = e
                    on_result(UserResult(slot.job.user_id, slot.job.folder, slot.losses, slot.tokens,
                                         time.perf_counter() - slot.started, error))

    # -- saving --------------------------------------------------------------------------------------------

    def adapter_state(self, s: int) -> dict[str, torch.Tensor]:
        """Slot ``s``'s LoRA weights under the key names peft saves (``base_model.model.{module}.lora_A.weight``)."""
        state = {}
        for name, layer in self.layers.items():
            state[f"base_model.model.{name}.lora_A.weight"] = layer.A[s].detach().clone().contiguous()
            state[f"base_model.model.{name}.lora_B.weight"] = layer.B[s].detach().clone().contiguous()
        return state

    def _save(self, s: int, slot: _Slot) -> None:
        job = slot.job
        peft_config = copy.deepcopy(self.peft_config)
        peft_config.inference_mode = True
        peft_config.base_model_name_or_path = getattr(self.model, "name_or_path", None) or None
        record = AdapterRecord(**{**job.record, "train_loss": sum(slot.losses) / len(slot.losses)})
        overwrite = Path(job.folder).exists()
        with atomic_dir(job.folder, overwrite=overwrite, mode=0o700) as tmp:
            peft_config.save_pretrained(tmp)
            save_file(self.adapter_state(s), str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
            record.save(tmp)


# ---------------------------------------------------------------------------------------------- entry points


def train_lora_users(config: TrainingConfig, peft_config: Any, model: nn.Module, tokenizer: Any,
                     jobs: Iterable[UserJob | BaseException], slots: int,
                     on_result: Callable[[UserResult], None] | None = None,
                     max_batch_tokens: int = 2048) -> list[UserResult]:
    """Train the LoRA adapters of ``jobs``, ``slots`` users at a time, on the frozen ``model``; returns the
    results in finishing order. ``slots=1`` is the single-user reference ("alone")."""
    results: list[UserResult] = []

    def collect(result: UserResult) -> None:
        results.append(result)
        if on_result is not None:
            on_result(result)

    ConcurrentLoraTrainer(config, peft_config, model, tokenizer, slots, max_batch_tokens).run(jobs, collect)
    return results


def train_users_concurrent(config: Any, model: nn.Module, tokenizer: Any, fingerprint: str, split: Any,
                           users: Sequence[str], profiles: Any, out: Path, report: Any,
                           on_done: Callable[[str, Path], None] | None, bar: Any) -> None:
    """The ``train_users`` loop with ``config.concurrent`` users per batch: same skip / update / failure /
    ``run.json`` / progress-bar semantics (see :func:`trainers.user.train_users`). Users whose adapters exist
    are skipped, or with ``--update`` continued through the sequential ``train_user``."""
    from oppu_hub.adapters import is_complete
    from oppu_hub.io import safe_name, write_json

    from .user import run_user

    task = get_task(config.task)
    builder = PromptBuilder(task, tokenizer, config.max_prompt_length)
    updates: list[str] = []
    training = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("users", "push_to_hub", "hub_store")}

    def finish(user_id: str, outcome: str | None, seconds: float, error: BaseException | None = None) -> None:
        if error is not None:
            report.failed[user_id] = f"{type(error).__name__}: {error}"
        elif outcome is not None:
            getattr(report, outcome).append(user_id)
        report.seconds[user_id] = round(seconds, 2)
        write_json(out / "run.json", dataclasses.asdict(report))
        bar.set_postfix_str(user_id[:24])
        bar.update(1)

    def jobs() -> Iterator[UserJob | BaseException]:
        for user_id in users:
            folder = out / safe_name(user_id)
            if is_complete(folder):
                if config.update:
                    updates.append(user_id)
                else:
                    finish(user_id, "skipped", 0.0)
                continue
            try:
                history = split.user_history(user_id)
                history = list(history)[-config.max_history:] if config.max_history else list(history)
                profile = profiles.get(user_id) if profiles else None
                rows = history_examples(builder, history, config.k, profile, config.history_format)
                if not rows:
                    raise ValueError("the user has no history to train on")
                last = history[-1]
                record = dict(user_id=user_id, task=task.name, base_model=config.base_dir,
                              base_fingerprint=fingerprint, peft_type=config.peft_type, k=config.k,
                              profile=config.profile, history_format=config.history_format,
                              num_history_items=len(history), last_item_id=str(last["id"]),
                              last_item_date=str(last["date"]) if last.get("date") else None,
                              trained_item_ids=[str(i["id"]) for i in history], training=training)
                yield UserJob(user_id, rows, folder, record)
            except Exception as e:  # noqa: BLE001 - recorded as this user's failure
                e.user_id = user_id  # type: ignore[attr-defined]
                yield e

    def on_result(result: UserResult) -> None:
        if result.error is not None:
            finish(result.user_id, None, result.seconds, result.error)
            return
        try:
            if on_done is not None:
                on_done(result.user_id, result.folder)
        except Exception as e:  # noqa: BLE001 - as train_users: recorded, the others go on
            finish(result.user_id, None, result.seconds, e)
            return
        finish(result.user_id, "trained", result.seconds)

    train_lora_users(config, config.peft_config(), model, tokenizer, jobs(), config.concurrent, on_result)
    for user_id in updates:  # continuing existing adapters: the sequential path (few new items each)
        start = time.perf_counter()
        try:
            outcome = run_user(config, model, tokenizer, fingerprint, split, profiles, out, user_id, on_done)
            finish(user_id, outcome, time.perf_counter() - start)
        except Exception as e:  # noqa: BLE001
            finish(user_id, None, time.perf_counter() - start, e)
