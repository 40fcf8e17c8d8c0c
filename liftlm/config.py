"""LIFT settings: one dataclass, the single source of truth for the CLI flags, the Python API and the
metadata stored beside every adapter.

Every field's ``metadata["help"]`` becomes the ``--help`` text of its flag (see ``liftlm.cli``).
Fields marked ``key=False`` do not change what is learned and so are not part of the adapter-store key.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .errors import LiftError

SCHEDULES = ("constant", "linear", "cosine")
QA_SCHEDULES = ("two-stage", "mixed")
QA_GENERATORS = ("auto", "keyphrase", "llm")
TRAINING_MODES = ("paper", "overlap", "recurrent")
# How a question is answered (liftlm.infer): icl, the truncated document in context; lift, the adapted model
# alone; lift+icl, both; rag / lift+rag, BM25-retrieved chunks in place of the truncated document.
MODES = ("icl", "lift", "lift+icl", "rag", "lift+rag")
FINETUNE_KINDS = ("lora", "full")
OBJECTIVES = ("ct", "distill", "ct+distill")
DISTILL_VIEWS = ("lift+icl", "lift", "lift+chunk")
DISTILL_LOSSES = ("kl", "ce")
QUESTION_CHECKS = ("names", "words")  # which questions the teacher wrote are kept (--distill-question-check)
# the kinds of distillation items (liftlm.distill): name questions in four phrasings, written questions, fact
# sentences with their fact blanked (--distill-cloze), summary and what-happens-next requests, retention prompts
DISTILL_KINDS = ("about", "tell", "what", "details", "written", "cloze", "summary", "next", "retention")
LR = 2e-4  # the default learning rate of ct and ct+distill (the paper's), and of distill before its batches
DISTILL_BATCH, DISTILL_LR = 8, 5.6e-4  # --objective distill's default batch and learning rate (measured together)
ATTENTION_MODULES = "q_proj,k_proj,v_proj,o_proj"  # LoRA targets of every objective (--target-modules auto)
MLP_MODULES = "gate_proj,up_proj,down_proj"  # ... and of --objective distill


def _f(default, help: str, key: bool = True, **kw):
    return field(default=default, metadata={"help": help, "key": key, **kw})


@dataclass
class LiftConfig:
    """How LIFT turns a document into an adapter. Defaults suit the embedded 135M model on a 2-core CPU
    (docs/defaults.md gives each reason); the paper's settings are ℓ=2048, s=768, LoRA r=128 on a GPU."""

    # --- segmentation (paper §3.1) ---
    segment_length: int = _f(256, "segment length ℓ in tokens")
    stride: int | None = _f(None, "stride s between segment starts in tokens (default 3ℓ/8, as the paper)")
    # --- contextualized training (paper §3.2) ---
    contextualized: bool = _f(True, "contextualized training: prefix each segment with the head+tail "
                                    "truncated document and a recite instruction (loss on the segment only); "
                                    "off = plain next-token training on the segments")
    ct_format: str = _f("raw", "how a contextualized sample is laid out: raw (plain text, as the authors' code: no chat "
                               "template, so no default system turn is trained) | chat (inside one chat turn, with "
                               "whatever system turn the template inserts)")
    context_tokens: int | None = _f(256, "most tokens of the truncated document shown before each segment in "
                                         "contextualized training (0 or less = fill the window); bounds "
                                         "the cost per sample")
    window: int | None = _f(None, "context budget in tokens (default: the model's own limit); set it lower "
                                  "to emulate a short-context model")
    # --- auxiliary tasks (paper §3.3) ---
    qa_pairs: int = _f(0, "auxiliary QA pairs per document (0 = off); trained beside the segments")
    qa_generator: str = _f("auto", f"how QA pairs are made: {' | '.join(QA_GENERATORS)} (auto: the LLM generator "
                                   "when its verified yield is high enough on a probe, else keyphrase)")
    qa_model: str | None = _f(None, "generator model for QA pairs: hub id, directory, .gguf, or the URL of an "
                                    "OpenAI-compatible endpoint (key in LIFTLM_QA_API_KEY or OPENAI_API_KEY; "
                                    "model name after '#', e.g. http://host/v1#llama3); default: the model itself")
    qa_window_sentences: int = _f(8, "sentences per window the LLM generator reads")
    qa_schedule: str = _f("two-stage", f"{' | '.join(QA_SCHEDULES)}: stage 1 segments for --epochs, stage 2 "
                                       "segments + QA for --qa-epochs (the paper), or one mixed stage")
    qa_epochs: int = _f(2, "stage-2 epochs (segments + QA) in the two-stage schedule")
    qa_weight: float = _f(1.0, "weight of the QA loss relative to the segment loss")
    qa_context_tokens: int | None = _f(None, "most tokens of the truncated document before each QA question "
                                             "(default: as --context-tokens; 0 = the question alone, as mode "
                                             "lift asks it: no document tokens per QA sample)")
    # --- context distillation (beyond the paper; liftlm.distill) ---
    objective: str = _f("distill", "what the adapter learns: distill (answer as the model does with a chunk in "
                                   "context: teacher answers to generated prompts, top-k distillation; the "
                                   "default: it stores facts that paraphrased questions can reach) | ct (the "
                                   "paper: recite the segments after the head+tail view) | ct+distill (segments, "
                                   "then segments + distillation items, as the two-stage QA schedule)")
    distill_prompts: int = _f(4, "distillation prompts per chunk (questions about its names and key phrases in "
                                 "several phrasings, a summary, a what-happens-next; 0: none, the items are then "
                                 "the written questions and the clozes only)")
    distill_questions: int = _f(2, "questions the teacher writes, with the chunk in context, about each sentence "
                                   "with a name or a number, in other words than the sentence's (then answers "
                                   "them as distillation prompts; 0: none)")
    distill_question_check: str = _f("names", "which of the teacher's written questions are kept (each must end with "
                                              "'?' and have 3-30 words): names (it names one of its sentence's "
                                              "names; a sentence without names: shares a content word with it) | "
                                              "words (either: it names a name or shares a content word, so 'Where "
                                              "can you find the book?' is kept for a sentence whose only name is "
                                              "'Spain')")
    distill_cloze: bool = _f(False, "ask about every whole sentence with a name or a number once: the sentence "
                                    "with its last number (else the name it ends with, else its last word) "
                                    "blanked, in the chunk's slots before key phrases, a summary and a "
                                    "what-happens-next request (a fact no name points at, e.g. a number after a "
                                    "lowercase key, is asked about too)")
    distill_blanks: int = _f(1, "with --distill-cloze, clozes per sentence: each blanks another of its facts (the "
                                "first as with 1; then its other numbers, its names, its last word)")
    distill_answer_tokens: int = _f(32, "most tokens of each teacher answer")
    teacher_batch: int | None = _f(None, "prompts the teacher answers at once (its items are the same at any "
                                         "width); default: 32 on a CPU, on a GPU as many as a quarter of its free "
                                         "memory holds, up to 256, with the chunks of several blocks taught "
                                         "together: a GPU's cost is its number of sequential calls", key=False)
    distill_retention: float = _f(0.15, "share of distillation items that are general requests unrelated to the "
                                        "document (the student keeps answering them as the base model does)")
    distill_loss: str = _f("kl", "kl: cross-entropy against the teacher's top-k distribution (distillation) | ce: "
                                 "plain next-token cross-entropy on the teacher's greedy answer (the same items "
                                 "as hard targets: the ablation)")
    distill_kinds: str = _f("all", "the kinds of teacher items the student trains on: all, or a comma-separated "
                                   f"subset of {', '.join(DISTILL_KINDS)} (the teacher makes every kind; the "
                                   "ablation of prompt diversity)")
    distill_views: str = _f("lift+icl,lift", "what the student sees before each prompt: lift+icl (the head+tail "
                                             "view of the document), lift (nothing), lift+chunk (the chunk the "
                                             "teacher read, as retrieval puts a passage in the window: the student "
                                             "keeps answering from its context where the context holds the answer)")
    # --- training ---
    training_mode: str = _f("paper", "paper: overlapping segments, each trained whole (every token ~ℓ/s times "
                                     "per epoch); overlap: each token trained once per epoch, the previous ℓ−s "
                                     "tokens and the context run without gradients as a key/value cache; "
                                     "recurrent: as overlap, but those keys/values are kept from the steps "
                                     "that computed them (Transformer-XL memory), not recomputed")
    finetune: str = _f("lora", f"what to train: {' | '.join(FINETUNE_KINDS)}")
    lora_rank: int = _f(16, "LoRA rank r")
    lora_alpha: float = _f(32.0, "LoRA alpha (scale = alpha / r)")
    lora_dropout: float = _f(0.0, "LoRA dropout")
    target_modules: str = _f("auto", "modules LoRA adapts: auto (the attention projections q/k/v/o; with "
                                     "--objective distill the MLP projections gate/up/down too, where the student "
                                     "stores what it learns), a comma-separated list of module names, or "
                                     "'all-linear'")
    lora_layers: float = _f(1.0, "the share of the model's layers LoRA adapts, counted from the top (0.5: the "
                                 "upper half). The backward pass stops at the lowest adapted layer, so training "
                                 "a token costs less (forward 1 + backward 2 × the share, in forward passes)")
    epochs: int = _f(2, "passes over the segments")
    learning_rate: float | None = _f(None, "peak learning rate (AdamW); default: 5.6e-4 for --objective distill "
                                           "(its batches of 8), 2e-4 for ct and ct+distill")
    lr_schedule: str = _f("constant", f"learning-rate schedule: {' | '.join(SCHEDULES)}")
    warmup_ratio: float = _f(0.0, "fraction of optimizer steps spent warming up linearly")
    weight_decay: float = _f(1e-4, "AdamW weight decay")
    batch_size: int | None = _f(None, "distillation samples per forward pass and optimizer step (samples that "
                                      "share a prefix are batched (see --pack-batches); the batch's loss is its samples' "
                                      "mean); default: 8 for --objective distill, 1 for ct+distill")
    group_by_length: bool = _f(False, "with --no-pack-batches, batch a prefix's distillation samples by length: "
                                      "each run of 8 batches' "
                                      "samples (in the epoch's order) sorted by length before it is cut into "
                                      "batches, so that a batch's rows are about as long and fewer pads run (in "
                                      "the epoch's order, batches of 8 of the facts documents' items run 0.31 "
                                      "pads per token of their own). Off: on Qwen 1.5B's facts documents it was "
                                      "1.07x faster but recalled less (16 of 20 facts in lift+icl against 19, two "
                                      "controls lost): a batch of one length is a batch of one kind of item")
    pack_batches: bool = _f(True, "pack a batch's distillation samples end to end into a few rows, each seeing "
                                  "only the shared prefix and itself, and project only the answer positions onto "
                                  "the vocabulary (the same losses as one padded row a sample, up to rounding; "
                                  "Llama, Mistral, Qwen 2/3 and SmolLM3 models; others are always padded). "
                                  "--no-pack-batches pads each sample's row to the longest", key=False)
    question_grad: bool = _f(True, "distillation samples run their question's tokens forward and backward, as their "
                                   "answer's; --no-question-grad runs the question forward only, without "
                                   "gradients (as the shared prefix), and only the positions that predict the "
                                   "answer backward (needs --pack-batches). Measured: the embedded model's "
                                   "student 1.15x faster, but on Qwen 1.5B's facts fewer facts recalled and a "
                                   "control lost: the gradient through the question's keys/values matters")
    prefix_refresh: int | None = _f(None, "distillation samples that reuse one computation of their shared "
                                          "prefix's keys/values (the head+tail view) before it is computed again "
                                          "with the current adapter; default: one per 64 tokens of the prefix, at "
                                          "least 8, so that a long view costs about a sixth of the training")
    grad_accum: int = _f(1, "batches per optimizer step (gradient accumulation)")
    max_grad_norm: float = _f(1.0, "gradient clipping norm (0 = off)")
    grad_checkpointing: bool = _f(False, "recompute activations in the backward pass (less memory; slower: each "
                                         "layer's forward runs twice)", key=False)
    seed: int = _f(0, "random seed (sample order, LoRA init, dropout)")
    adapter_scale: float = _f(1.0, "at answer time, the LoRA adapter's update times this (1: as trained; 0: the "
                                   "base model; between, the interpolation of WiSE-FT): for when the adapter's "
                                   "answer overrides what the window holds (lift+rag); changes no training",
                              key=False)
    checkpoint_minutes: float = _f(10.0, "LoRA training is checkpointed after each epoch and, within an epoch, "
                                         "every this many minutes (0: at epoch ends only); an interrupted run "
                                         "resumes from its last checkpoint", key=False)

    def __post_init__(self) -> None:
        problems = []
        if self.segment_length < 8:
            problems.append(f"--segment-length must be at least 8 tokens (got {self.segment_length})")
        if self.stride is not None and not 0 < self.stride <= self.segment_length:
            problems.append(f"--stride must be in 1..segment length {self.segment_length} (got {self.stride})")
        if self.window is not None and self.window < 16:
            problems.append(f"--window must be at least 16 tokens (got {self.window})")
        if self.finetune not in FINETUNE_KINDS:
            problems.append(f"--finetune must be one of {', '.join(FINETUNE_KINDS)} (got {self.finetune!r})")
        if self.lr_schedule not in SCHEDULES:
            problems.append(f"--lr-schedule must be one of {', '.join(SCHEDULES)} (got {self.lr_schedule!r})")
        if self.lora_rank < 1:
            problems.append(f"--lora-rank must be positive (got {self.lora_rank})")
        if not 0 <= self.lora_dropout < 1:
            problems.append(f"--lora-dropout must be in [0, 1) (got {self.lora_dropout})")
        if self.epochs < 0:
            problems.append(f"--epochs must be 0 or more (got {self.epochs})")
        if self.learning_rate is not None and not self.learning_rate > 0:
            problems.append(f"--learning-rate must be positive (got {self.learning_rate})")
        if not 0 <= self.warmup_ratio < 1:
            problems.append(f"--warmup-ratio must be in [0, 1) (got {self.warmup_ratio})")
        if not 0 < self.lora_layers <= 1:
            problems.append(f"--lora-layers must be in (0, 1] (got {self.lora_layers})")
        if self.batch_size is not None and self.batch_size < 1:
            problems.append(f"--batch-size must be at least 1 (got {self.batch_size})")
        if self.group_by_length and self.pack_batches and self.objective != "ct":
            problems.append("--group-by-length orders padded rows: it needs --no-pack-batches (packed rows have "
                            "few pads to save)")
        if not self.question_grad and (self.objective == "ct" or not self.pack_batches):
            problems.append("--no-question-grad concerns distillation samples in packed rows: it needs --objective "
                            "distill or ct+distill and --pack-batches")
        if self.teacher_batch is not None and self.teacher_batch < 1:
            problems.append(f"--teacher-batch must be at least 1 (got {self.teacher_batch})")
        if self.prefix_refresh is not None and self.prefix_refresh < 1:
            problems.append(f"--prefix-refresh must be at least 1 (got {self.prefix_refresh})")
        if self.grad_accum < 1:
            problems.append(f"--grad-accum must be at least 1 (got {self.grad_accum})")
        if self.training_mode not in TRAINING_MODES:
            problems.append(f"--training-mode must be one of {', '.join(TRAINING_MODES)} (got {self.training_mode!r})")
        if self.training_mode in ("overlap", "recurrent") and self.grad_checkpointing:
            problems.append(f"--grad-checkpointing does not work with --training-mode {self.training_mode} "
                            "(the cache is dropped)")
        if self.training_mode == "recurrent" and self.effective_stride >= self.segment_length:
            problems.append("--training-mode recurrent needs overlapping segments (--stride < --segment-length)")
        if self.ct_format not in ("raw", "chat"):
            problems.append(f"--ct-format must be raw or chat (got {self.ct_format!r})")
        if self.qa_pairs < 0:
            problems.append(f"--qa-pairs must be 0 or more (got {self.qa_pairs})")
        if self.qa_generator not in QA_GENERATORS:
            problems.append(f"--qa-generator must be one of {', '.join(QA_GENERATORS)} (got {self.qa_generator!r})")
        if self.qa_schedule not in QA_SCHEDULES:
            problems.append(f"--qa-schedule must be one of {', '.join(QA_SCHEDULES)} (got {self.qa_schedule!r})")
        if self.qa_epochs < 0 or self.qa_weight < 0 or self.qa_window_sentences < 1:
            problems.append("--qa-epochs and --qa-weight must be 0 or more, --qa-window-sentences at least 1")
        if self.objective not in OBJECTIVES:
            problems.append(f"--objective must be one of {', '.join(OBJECTIVES)} (got {self.objective!r})")
        elif self.objective != "ct" and self.training_mode != "paper":
            problems.append(f"--objective {self.objective} trains with --training-mode paper only (--objective ct "
                            "for the paper's objective, which every --training-mode trains)")
        if self.distill_prompts < 0 or self.distill_answer_tokens < 1 or not 0 <= self.distill_retention < 1:
            problems.append("--distill-prompts must be 0 or more, --distill-answer-tokens at least 1, "
                            "--distill-retention in [0, 1)")
        elif self.objective != "ct" and not (self.distill_prompts or self.distill_questions or self.distill_cloze):
            problems.append("--distill-prompts 0 asks nothing about the document unless the teacher writes "
                            "questions (--distill-questions) or asks clozes (--distill-cloze)")
        if not 0 <= self.adapter_scale <= 4:  # (not a NaN either)
            problems.append(f"--adapter-scale must be between 0 and 4 (got {self.adapter_scale})")
        elif self.adapter_scale != 1 and self.finetune != "lora":
            problems.append("--adapter-scale scales a LoRA adapter: it needs --finetune lora")
        if not self.checkpoint_minutes >= 0:
            problems.append(f"--checkpoint-minutes must be 0 or more (got {self.checkpoint_minutes})")
        if self.distill_blanks < 1:
            problems.append(f"--distill-blanks must be at least 1 (got {self.distill_blanks})")
        if self.distill_questions < 0:
            problems.append(f"--distill-questions must be 0 or more (got {self.distill_questions})")
        if self.distill_question_check not in QUESTION_CHECKS:
            problems.append(f"--distill-question-check must be one of {', '.join(QUESTION_CHECKS)} "
                            f"(got {self.distill_question_check!r})")
        if self.distill_loss not in DISTILL_LOSSES:
            problems.append(f"--distill-loss must be one of {', '.join(DISTILL_LOSSES)} (got {self.distill_loss!r})")
        if not self.kinds or set(self.kinds) - set(DISTILL_KINDS):
            problems.append(f"--distill-kinds: all, or a comma-separated subset of {', '.join(DISTILL_KINDS)} "
                            f"(got {self.distill_kinds!r})")
        if not self.views or set(self.views) - set(DISTILL_VIEWS):
            problems.append(f"--distill-views: a comma-separated subset of {', '.join(DISTILL_VIEWS)} "
                            f"(got {self.distill_views!r})")
        if problems:
            raise LiftError("; ".join(problems))

    @property
    def backward_share(self) -> float:
        """The share of the layers a training step's backward pass runs: down to the lowest adapted layer
        (``lora_layers`` with LoRA, all of them for full fine-tuning)."""
        return self.lora_layers if self.finetune == "lora" else 1.0

    @property
    def resolved_batch_size(self) -> int:
        """``batch_size``, its default resolved: 8 distillation samples a step for ``--objective distill``, 1 for
        ``ct+distill`` (and ``ct``, which has none). Batches of 8 at 5.6e-4 recalled more facts than single
        samples at 2e-4 on Qwen 1.5B's facts documents, the student 1.19× faster on a CPU (docs/defaults.md)."""
        if self.batch_size is not None:
            return self.batch_size
        return DISTILL_BATCH if self.objective == "distill" else 1

    @property
    def resolved_learning_rate(self) -> float:
        """``learning_rate``, its default resolved: 5.6e-4 for ``--objective distill`` (about 2e-4 × √8, for its
        batches of 8), 2e-4 for ``ct`` and ``ct+distill`` (the paper's)."""
        if self.learning_rate is not None:
            return self.learning_rate
        return DISTILL_LR if self.objective == "distill" else LR

    @property
    def effective_stride(self) -> int:
        return self.stride if self.stride is not None else max(1, (3 * self.segment_length) // 8)

    @property
    def qa_context(self) -> int | None:
        """Document tokens before a QA question: ``qa_context_tokens`` (0 = none), else as ``context_tokens``
        (where 0 or less means "fill the window", spelled None here)."""
        if self.qa_context_tokens is not None:
            return max(self.qa_context_tokens, 0)
        return self.context_tokens if self.context_tokens and self.context_tokens > 0 else None

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kinds of distillation items trained (``distill_kinds``, ``all`` spelled out)."""
        if self.distill_kinds.strip() == "all":
            return DISTILL_KINDS
        # "asked": the old name of "written" (in the settings stored beside older adapters)
        return tuple({"asked": "written"}.get(k.strip(), k.strip()) for k in self.distill_kinds.split(",") if k.strip())

    @property
    def views(self) -> tuple[str, ...]:
        return tuple(v.strip() for v in self.distill_views.split(",") if v.strip())

    @property
    def resolved_target_modules(self) -> str:
        """``target_modules`` with ``auto`` resolved: the attention projections, plus the MLP projections for
        ``--objective distill``, where the student stores what it learns (docs/defaults.md has the measurement);
        ``ct`` and ``ct+distill`` keep the paper's attention projections."""
        if self.target_modules != "auto":
            return self.target_modules
        return ATTENTION_MODULES + ("," + MLP_MODULES if self.objective == "distill" else "")

    @property
    def lora_targets(self) -> str | list[str]:
        targets = self.resolved_target_modules
        if targets == "all-linear":
            return "all-linear"
        return [m.strip() for m in targets.split(",") if m.strip()]

    def to_dict(self) -> dict:
        """The settings as given (None: a default that depends on others, e.g. the learning rate on the
        objective): what to build another ``LiftConfig`` from, with some settings changed."""
        return dataclasses.asdict(self)

    def resolved_dict(self) -> dict:
        """``to_dict`` with the defaults that depend on other settings resolved: the numbers trained with, for
        records and reports."""
        return {**self.to_dict(), "learning_rate": self.resolved_learning_rate,
                "batch_size": self.resolved_batch_size}

    def training_dict(self) -> dict:
        """Every setting that may shape training (all but ``key=False`` fields), defaults resolved."""
        resolved = self.resolved_dict()
        return {f.name: resolved[f.name] for f in dataclasses.fields(self) if f.metadata.get("key", True)}

    def answer_dict(self) -> dict:
        """The answer-time settings (``ANSWER_FIELDS``) that are not at their defaults."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        return {name: getattr(self, name) for name in ANSWER_FIELDS if getattr(self, name) != defaults[name]}

    def key_dict(self) -> dict:
        """The settings that change the weights: what the adapter-store key (version 2) hashes.

        * Fields marked ``key=False`` (e.g. ``grad_checkpointing``) never enter it.
        * The fields of ``KEY_FIELDS`` (those of key version 2) always do, but only where they matter: the QA
          settings only when there is auxiliary QA (``qa_pairs`` > 0; the QA source adds a file's hash for
          ``--qa-file``), the LoRA settings only for ``finetune="lora"``, the stride as the number it resolves to.
        * A weight-changing field added later enters the key only when it differs from its default, and its
          default must train as liftlm did before it existed: adding a setting keeps every stored adapter's key.
        """
        out = {}
        for f in dataclasses.fields(self):
            if not f.metadata.get("key", True):
                continue
            value = getattr(self, f.name)
            if f.name in KEY_FIELDS or value != f.default:
                out[f.name] = value
        out["stride"] = self.effective_stride
        out["learning_rate"] = self.resolved_learning_rate  # the number trained with, given or by default
        # batches: in the key whenever there are any (liftlm trained one sample at a time before the setting
        # existed, and those adapters keep their key); ct has no distillation samples to batch
        out.pop("batch_size", None)
        if self.objective != "ct" and self.resolved_batch_size != 1:
            out["batch_size"] = self.resolved_batch_size
        if self.qa_pairs == 0:  # no QA samples from synthesis (a --qa-file adds its own hash to the key)
            for name in ("qa_generator", "qa_model", "qa_window_sentences"):
                out.pop(name, None)
        # written questions: in the key whenever there are any (their default was 0 before it became 2: the
        # adapters trained before the setting existed have none and keep their key)
        if self.distill_questions:
            out["distill_questions"] = self.distill_questions
        else:
            out.pop("distill_questions", None)
        if not self.distill_questions or self.distill_question_check == "names":  # (the keys from before it existed)
            out.pop("distill_question_check", None)
        if "distill_kinds" in out:  # hashed as key version 2 named the kinds ("written" was "asked"): same key
            out["distill_kinds"] = out["distill_kinds"].replace("written", "asked")
        if self.objective == "ct" or self.resolved_batch_size == 1:  # nothing batched to group
            out.pop("group_by_length", None)
        if self.objective == "ct":  # no distillation items
            for name in ("distill_prompts", "distill_answer_tokens", "distill_retention", "distill_views",
                         "distill_loss", "distill_questions", "distill_question_check", "distill_kinds",
                         "prefix_refresh", "distill_cloze", "distill_blanks"):
                out.pop(name, None)
        if not self.distill_cloze:  # no clozes to blank
            out.pop("distill_blanks", None)
        if self.finetune != "lora":
            for name in ("lora_rank", "lora_alpha", "lora_dropout", "target_modules", "lora_layers"):
                out.pop(name, None)
        else:  # the modules trained, not how they were named: "auto" for ct keys as the list it stood for before
            out["target_modules"] = self.resolved_target_modules
        return out

    @classmethod
    def from_dict(cls, d: dict, strict: bool = False) -> LiftConfig:
        """The settings stored in an adapter's metadata. Settings this liftlm does not know (written by a newer
        one) are ignored with a warning; the adapter's weights do not depend on how they are read back.
        ``strict`` (settings a user gives, e.g. to the server): unknown settings are a ``LiftError``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown and strict:
            raise LiftError(f"unknown LIFT settings: {', '.join(unknown)}")
        if unknown:
            import warnings

            warnings.warn(f"ignoring LIFT settings this liftlm does not know: {', '.join(unknown)}", stacklevel=2)
        # settings written before --batch-size existed: liftlm trained one sample a step then
        d = {"batch_size": 1, **d}
        return cls(**{k: v for k, v in d.items() if k in names})


# Settings that change the answers but not the weights: given with a stored adapter (``ask --adapter``), with each
# chat request over HTTP (not with a document), and part of an evaluation's identity when not at their defaults.
ANSWER_FIELDS = ("adapter_scale",)

# The weight-changing settings of store-key version 2, always in the key (see ``LiftConfig.key_dict``). Frozen:
# a setting added after version 2 enters the key only when it is not at its default.
KEY_FIELDS = frozenset({
    "segment_length", "stride", "contextualized", "ct_format", "context_tokens", "window", "objective",
    "distill_prompts", "distill_answer_tokens", "distill_retention", "distill_views", "qa_pairs", "qa_generator",
    "qa_model", "qa_window_sentences", "qa_schedule", "qa_epochs", "qa_weight", "qa_context_tokens",
    "training_mode", "finetune", "lora_rank", "lora_alpha", "lora_dropout", "target_modules", "epochs",
    "learning_rate", "lr_schedule", "warmup_ratio", "weight_decay", "grad_accum", "max_grad_norm", "seed",
})
