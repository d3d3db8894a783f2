"""Concurrent per-user LoRA training: many users' adapters trained in the same forward/backward passes over one
shared frozen base (the mLoRA idea); the ``train-users`` default for LoRA (:class:`trainers.runs.ConcurrentExecutor`).

How it works
------------
* **Slots.** ``N`` users are trained at once, each in a *slot*. Every adapted linear layer of the base (peft's
  ``target_modules`` matching, resolved by peft itself) becomes a :class:`~trainers.multi_lora.MultiLoraLinear`
  holding the LoRA weights of all slots stacked; a micro-batch mixes rows of different users, each routed to its
  slot's adapter, and the base matmuls run once over the whole batch. When a user finishes, its adapter is saved
  and the slot is refilled with the next user (continuous batching), so slots never idle while users remain. ``N``
  is capped to what fits in half the free memory (:func:`trainers.common.slots_that_fit`; a slot costs a few
  copies of one LoRA).
* **Losses never mix.** Each user's loss is the mean cross-entropy over *its own* label tokens of the step (what
  ``SFTTrainer`` computes for a batch of that user alone: completion + EOS for prompt/completion rows, every token
  for text rows); the step minimises the *sum* of the users' losses. Since user ``u``'s parameters only touch
  user ``u``'s rows, ``d(sum)/d(params_u) = d(loss_u)/d(params_u)``: gradients never flow between users.
* **Per-user optimiser.** :class:`trainers.adamw.SlotAdamW` (``torch.optim.AdamW`` per slot, with the Trainer's
  clipping) and a per-slot linear schedule with the Trainer path's warmup (:func:`trainers.common.lr_factor`: none
  below 20 steps). A slot whose user has no batch in a step does not step at all.
* **Same data, same order, same init as alone.** Rows are tokenized and each user's batch order planned as
  :mod:`trainers.rows` says (as ``SFTTrainer`` prepares rows; a seeded permutation per epoch per user).
  ``gradient_accumulation_steps`` G makes each optimizer step one update over G consecutive batches (the loss a
  token mean over all their rows, as the Trainer's accumulation). Every user starts from the LoRA init
  ``get_peft_model`` gives after ``set_seed(config.seed)`` -- exactly what :func:`trainers.user.train_job` starts
  from -- or, for ``--update``, from its saved adapter (fresh AdamW and schedule over the new items, as the Trainer
  path).
* **"Alone"** means this same loop with ``N = 1`` (:func:`train_lora_users` with ``slots=1``): a concurrent run
  gives each user's adapter equal to that up to float summation order (tested to ``allclose``). Against the
  ``SFTTrainer`` path the math is the same (loss, AdamW, clipping, schedule, init); only the shuffle differs, so
  with one batch per epoch the adapters agree closely (tested), otherwise the loss curves agree statistically.
* **Checkpoints.** After every epoch but the last, a slot's state (its LoRA weights, AdamW moments, step, loss
  history; the data plan is a function of the rows and the seed) is checkpointed into the user's work folder
  (:mod:`trainers.slot_checkpoint`). A killed run resumes each user from there; the work folder goes once the
  adapter is saved.
* **Cheaper than the Trainer path** beyond batching users together: rows of a step are sorted by length and split
  into micro-batches of at most ``max_batch_tokens`` padded tokens (:func:`trainers.rows.micro_batches`; gradients
  summed: the same math as one batch); the LM head runs only at positions that carry a label (for LaMP's short
  answers that skips ~1/5 of the model's FLOPs); bf16 autocast where the CPU/GPU has it (fp32 master weights);
  no per-user model, Trainer, accelerator or dataset objects.

Every ``TrainingConfig`` field is honoured as by the Trainer path; ``logging_steps`` has no per-step log to pace
(the record's ``train_loss`` is the mean over all steps, as the Trainer's). Saved adapters are standard PEFT
folders (``adapter_config.json`` + ``adapter_model.safetensors`` with peft's key names) plus the record of
:func:`trainers.user.adapter_record`, written atomically; they load with ``PeftModel.from_pretrained``. Only the
PEFT types :data:`trainers.peft_types.PEFT_TYPES` marks ``concurrent`` (plain LoRA) are trained here; the others use
the sequential path.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from peft import get_peft_model
from safetensors.torch import load_file, save_file
from torch import nn
from torch.profiler import record_function
from tqdm.auto import tqdm
from transformers import set_seed

from oppu_hub.io import atomic_dir, read_json

from .adamw import SlotAdamW
from .common import MAX_BATCH_TOKENS, lr_factor, max_length, slots_that_fit, step_bar, trains_in_bf16
from .multi_lora import MultiLoraLinear, Route, lora_key, lora_matrices, multi_lora, slot_weights
from .peft_types import PEFT_TYPES, type_name
from .rows import IGNORE, Row, batch_plan, collate, micro_batches, tokenize_rows
from .slot_checkpoint import checkpoint_key, load_checkpoint, save_checkpoint
from .training_config import TrainingConfig
from .user import UserJob

logger = logging.getLogger(__name__)

SLOT_COPIES = 8  # fp32 copies of a slot's LoRA in memory: weights, gradients, 2 AdamW moments, step temporaries


# ---------------------------------------------------------------------------------------------- results & slots


@dataclass
class UserResult:
    """A user's end in a run: its step losses (those restored from a checkpoint too), tokens trained, seconds,
    the optimizer steps this run made, and the error that failed it, if any."""

    user_id: str
    folder: Path
    losses: list[float]
    tokens: int
    seconds: float
    steps: int = 0
    error: BaseException | None = None


@dataclass
class _Slot:
    job: UserJob
    rows: list[Row]
    plan: list[list[int]]
    per_epoch: int
    key: str
    started: float = field(default_factory=time.perf_counter)
    step: int = 0
    resumed_at: int = 0
    losses: list[float] = field(default_factory=list)
    tokens: int = 0

    def result(self, error: BaseException | None = None) -> UserResult:
        return UserResult(self.job.user_id, self.job.folder, self.losses, self.tokens,
                          time.perf_counter() - self.started, self.step - self.resumed_at, error)


# ---------------------------------------------------------------------------------------------- the trainer


class ConcurrentLoraTrainer:
    """Trains LoRA adapters of up to ``slots`` users at a time on one frozen ``model`` (see the module doc).

    ``model`` is wrapped in place while :meth:`run` runs and left exactly as it came afterwards.
    """

    def __init__(self, config: TrainingConfig, peft_config: Any, model: nn.Module, tokenizer: Any, slots: int,
                 max_batch_tokens: int | None = None) -> None:
        method = PEFT_TYPES.get(type_name(getattr(peft_config, "peft_type", None)))
        if method is None or not method.concurrent:
            raise ValueError("concurrent training supports LoRA adapters only")
        if getattr(peft_config, "use_rslora", False) or getattr(peft_config, "use_dora", False):
            raise ValueError("concurrent training supports plain LoRA (no rsLoRA/DoRA)")
        self.config = config
        self.peft_config = peft_config
        self.model = model
        self.tokenizer = tokenizer
        self.slots = max(1, int(slots))
        self.device = next(model.parameters()).device
        self.max_batch_tokens = max_batch_tokens or MAX_BATCH_TOKENS.get(self.device.type, 2048)
        self.max_length = max_length(config)
        self.bf16 = trains_in_bf16(config)
        self.route = Route()
        self.layers: dict[str, MultiLoraLinear] = {}
        self.init: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    # -- model surgery -----------------------------------------------------------------------------------

    def _initial_weights(self) -> None:
        """The LoRA init ``train_job`` would start from: ``set_seed(seed)`` then ``get_peft_model``."""
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

    def _fit_slots(self) -> None:
        """Cap ``slots`` to what fits in memory (:data:`SLOT_COPIES` fp32 copies of one user's LoRA each)."""
        per_slot = SLOT_COPIES * 4 * sum(a.numel() + b.numel() for a, b in self.init.values())
        fit = slots_that_fit(per_slot, self.device, self.slots)
        if fit < self.slots:
            logger.warning("%d users at a time fit in memory, not %d", fit, self.slots)
        self.slots = fit

    # -- slot state ----------------------------------------------------------------------------------------

    def _slot_tensors(self) -> Iterator[tuple[str, nn.Parameter]]:
        """``(name, stacked parameter)`` of every LoRA matrix; ``name`` (``{module}.A`` / ``.B``) as in a slot
        checkpoint."""
        for module, part, p in lora_matrices(self.layers):
            yield f"{module}.{part}", p

    def _fill(self, s: int, job: UserJob) -> _Slot:
        """Put ``job`` into slot ``s``: from its checkpoint when one matches, else from its saved adapter
        (``--update``) or the LoRA init, with fresh AdamW moments."""
        rows = tokenize_rows(job.rows, self.tokenizer, self.max_length)
        if not rows:
            raise ValueError("the user has no history to train on")
        cfg = self.config
        plan = batch_plan(cfg, len(rows))
        per_epoch = math.ceil(len(rows) / (cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps))
        slot = _Slot(job, rows, plan, per_epoch, checkpoint_key(job.rows, plan, job.init, cfg.learning_rate))
        start = self._adapter_weights(job.init) if job.init is not None else {
            f"{name}.{part}": w for name, (a, b) in self.init.items() for part, w in (("A", a), ("B", b))}
        with torch.no_grad():
            for name, p in self._slot_tensors():
                p[s].copy_(start[name])
        self.optimizer.reset(s)
        self._restore(s, slot)
        return slot

    def _adapter_weights(self, folder: Path) -> dict[str, torch.Tensor]:
        """A saved adapter's LoRA matrices under slot-checkpoint names; refuses one of another rank, scale or
        target modules (the slots of a run share one shape)."""
        saved = load_file(str(folder / "adapter_model.safetensors"))
        saved_config = read_json(folder / "adapter_config.json")
        weights = {f"{module}.{part}": saved.get(lora_key(module, part))
                   for module, part, _ in lora_matrices(self.layers)}
        cfg = self.peft_config
        same_scale = (saved_config.get("lora_alpha"), saved_config.get("r"), bool(saved_config.get("use_rslora"))) == (
            cfg.lora_alpha, cfg.r, False)
        same_shapes = len(saved) == len(weights) and all(
            weights[name] is not None and weights[name].shape == p.shape[1:] for name, p in self._slot_tensors())
        if not (same_scale and same_shapes):
            raise ValueError(f"{folder} is a LoRA of another rank, alpha or target modules than this run's; update "
                             "it with the settings it was trained with, or with --concurrent 1")
        return weights

    def _save_checkpoint(self, s: int, slot: _Slot) -> None:
        """Write slot ``s``'s state to its user's work folder (:func:`trainers.slot_checkpoint.save_checkpoint`)."""
        tensors = {}
        for name, p in self._slot_tensors():
            moments = self.optimizer.state[p]
            tensors[name] = p[s]
            tensors[f"{name}.m"] = moments["m"][s]
            tensors[f"{name}.v"] = moments["v"][s]
        save_checkpoint(slot.job.work_dir, tensors,
                        {"key": slot.key, "step": slot.step, "losses": slot.losses, "tokens": slot.tokens})

    def _restore(self, s: int, slot: _Slot) -> None:
        """Load slot ``s``'s state from its user's checkpoint, if one was written for these rows and plan."""
        checkpoint = load_checkpoint(slot.job.work_dir, slot.key)
        if checkpoint is None:
            return
        tensors, progress = checkpoint
        with torch.no_grad():
            for name, p in self._slot_tensors():
                moments = self.optimizer.state[p]
                p[s].copy_(tensors[name])
                moments["m"][s].copy_(tensors[f"{name}.m"])
                moments["v"][s].copy_(tensors[f"{name}.v"])
        slot.step = slot.resumed_at = int(progress["step"])
        slot.losses, slot.tokens = list(progress["losses"]), int(progress["tokens"])
        self.optimizer.steps[s] = slot.step

    # -- training ------------------------------------------------------------------------------------------

    def _forward_backward(self, batch: list[tuple[int, Row, float]]) -> torch.Tensor:
        """One step's rows ``(slot, row, weight)``: micro-batches of similar length; per-slot summed losses."""
        loss_sums = torch.zeros(self.slots, device=self.device)
        decoder = getattr(self.model, self.model.base_model_prefix)
        head = self.model.get_output_embeddings()
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        for idx in micro_batches([r for _, r, _ in batch], self.max_batch_tokens):
            rows = [batch[i] for i in idx]
            with record_function("oppu.collate"):
                ids, labels, mask = collate([r for _, r, _ in rows], pad)
            row_slots = torch.tensor([s for s, _, _ in rows])  # host copy: indexes host tensors below
            weights = torch.tensor([w for _, _, w in rows])
            slots = row_slots.to(self.device)
            self.route.slots = slots
            with record_function("oppu.forward"), autocast:
                hidden = decoder(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).last_hidden_state
                target = labels[:, 1:]
                keep = target != IGNORE
                row_of, col_of = keep.nonzero(as_tuple=True)  # on the host: no device sync for a boolean index
                logits = head(hidden[row_of.to(self.device), col_of.to(self.device)])  # LM head only at labels
            with record_function("oppu.loss"):
                nll = F.cross_entropy(logits.float(), target[keep].to(self.device), reduction="none")
                tok_weight = (weights / self.counts[row_slots])[row_of].to(nll.device)
            with record_function("oppu.backward"):
                (nll * tok_weight).sum().backward()
            loss_sums.index_add_(0, row_slots[row_of].to(self.device), nll.detach().float())
        self.route.slots = None
        return loss_sums

    def run(self, jobs: Iterable[UserJob], on_result: Callable[[UserResult], None]) -> None:
        """Train every job; ``on_result`` gets each user's result as soon as it finishes (its adapter saved) or
        fails (a user whose rows, checkpoint or step fails; the others go on)."""
        was_training = self.model.training
        grads = [p.requires_grad for p in self.model.parameters()]
        try:
            self._initial_weights()
            self._fit_slots()
            for p in self.model.parameters():
                p.requires_grad_(False)
            self.model.train()
            cfg = self.peft_config
            ranks = {name: a.shape[0] for name, (a, _b) in self.init.items()}
            with multi_lora(self.model, ranks, self.slots, cfg.lora_alpha / cfg.r, cfg.lora_dropout, self.route,
                            self.device) as self.layers:
                self.optimizer = SlotAdamW([p for _, p in self._slot_tensors()], self.slots, self.device)
                with contextlib.closing(step_bar()) as bar:
                    self._loop(iter(jobs), on_result, bar)
        finally:
            for p, g in zip(self.model.parameters(), grads, strict=True):
                p.requires_grad_(g)
            self.model.train(was_training)

    def _loop(self, jobs: Iterator[UserJob], on_result: Callable[[UserResult], None], bar: tqdm) -> None:
        """The step loop; ``bar`` counts every user's optimizer steps (a resumed user's checkpointed ones as done;
        a failed user's remaining ones leave its total)."""
        slots: list[_Slot | None] = [None] * self.slots
        cfg = self.config
        while True:
            for s in range(self.slots):  # refill free slots (continuous batching)
                while slots[s] is None and (job := next(jobs, None)) is not None:
                    try:
                        slots[s] = self._fill(s, job)
                    except Exception as e:  # noqa: BLE001 - recorded as this user's failure
                        on_result(UserResult(job.user_id, job.folder, [], 0, 0.0, error=e))
                        continue
                    bar.total += len(slots[s].plan)
                    bar.update(slots[s].step)
                    bar.refresh()
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
                loss_sums = self._forward_backward(batch)
                with record_function("oppu.optimizer"):
                    self.optimizer.step(active, lrs)
                loss_sums = loss_sums.cpu()  # the step's one device-to-host copy
            except Exception as e:  # noqa: BLE001 - a failing step fails the users in it, not the run
                self.optimizer.zero_grad()
                for s in live:
                    _drop_remaining(bar, slots[s])
                    on_result(slots[s].result(e))
                    slots[s] = None
                continue
            bar.update(len(live))
            for s in live:
                slot = slots[s]
                slot.losses.append(float(loss_sums[s] / self.counts[s]))
                slot.tokens += sum(len(slot.rows[i].input_ids) for i in slot.plan[slot.step])
                slot.step += 1
                done = slot.step == len(slot.plan)
                if not done and slot.step % slot.per_epoch:
                    continue
                try:
                    if done:
                        self._save(s, slot)
                    else:
                        self._save_checkpoint(s, slot)
                except Exception as e:  # noqa: BLE001 - recorded as this user's failure
                    slots[s] = None
                    _drop_remaining(bar, slot)
                    on_result(slot.result(e))
                    continue
                if done:
                    slots[s] = None
                    shutil.rmtree(slot.job.work_dir, ignore_errors=True)
                    on_result(slot.result())

    # -- saving --------------------------------------------------------------------------------------------

    def adapter_state(self, s: int) -> dict[str, torch.Tensor]:
        """Slot ``s``'s LoRA weights under the key names peft saves (``base_model.model.{module}.lora_A.weight``)."""
        return slot_weights(self.layers, s)

    def _save(self, s: int, slot: _Slot) -> None:
        job = slot.job
        peft_config = copy.deepcopy(self.peft_config)
        peft_config.inference_mode = True
        peft_config.base_model_name_or_path = getattr(self.model, "name_or_path", None) or None
        record = dataclasses.replace(job.record, train_loss=sum(slot.losses) / len(slot.losses))
        with atomic_dir(job.folder, overwrite=job.overwrite, mode=0o700) as tmp:
            peft_config.save_pretrained(tmp)
            save_file(self.adapter_state(s), str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
            record.save(tmp)  # after the weights: it records their sha256


def _drop_remaining(bar: tqdm, slot: _Slot) -> None:
    """Take a failed user's steps that will not run out of ``bar``'s total."""
    bar.total -= len(slot.plan) - slot.step
    bar.refresh()


# ---------------------------------------------------------------------------------------------- entry point


def train_lora_users(config: TrainingConfig, peft_config: Any, model: nn.Module, tokenizer: Any,
                     jobs: Iterable[UserJob], slots: int, on_result: Callable[[UserResult], None] | None = None,
                     max_batch_tokens: int | None = None) -> list[UserResult]:
    """Train the LoRA adapters of ``jobs``, ``slots`` users at a time, on the frozen ``model``; returns the
    results in finishing order. ``slots=1`` is the single-user reference ("alone")."""
    results: list[UserResult] = []

    def collect(result: UserResult) -> None:
        results.append(result)
        if on_result is not None:
            on_result(result)

    ConcurrentLoraTrainer(config, peft_config, model, tokenizer, slots, max_batch_tokens).run(jobs, collect)
    return results
