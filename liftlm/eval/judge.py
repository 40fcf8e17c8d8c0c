"""An LLM judge for free-form answers (LooGLE QA): is the prediction semantically equivalent to the gold answer?

The LIFT paper scores LooGLE with a GPT-4 judge that answers True or False. ``make_judge`` returns one of:

* ``EndpointJudge`` for ``http(s)://HOST/v1#MODEL``: an OpenAI-compatible chat-completions endpoint (the
  model name after '#'; the key, if the endpoint needs one, in ``LIFTLM_JUDGE_API_KEY`` or ``OPENAI_API_KEY``);
* ``LocalJudge`` for anything else: a model liftlm can load (hub id, local directory, .gguf), greedy decoding.

A judge is called as ``judge(question, gold, prediction) -> (verdict, reply)``.
"""
from __future__ import annotations

import re

from ..endpoint import ChatEndpoint, is_endpoint
from ..errors import LiftError

JUDGE_PROMPT = """You are grading an answer to a question about a long text.

Question: {question}
Reference answer: {gold}
Candidate answer: {prediction}

Does the candidate answer say the same thing as the reference answer (the same meaning, even if worded
differently)? Reply with one word: True or False."""

KEY_VARIABLES = ("LIFTLM_JUDGE_API_KEY", "OPENAI_API_KEY")
_VERDICT = re.compile(r"\b(true|false)\b", re.IGNORECASE)


def judge_messages(question: str, gold: str, prediction: str) -> list[dict]:
    text = JUDGE_PROMPT.format(question=question.strip(), gold=gold.strip(), prediction=prediction.strip() or "(empty)")
    return [{"role": "user", "content": text}]


def parse_verdict(reply: str) -> bool:
    """The first True/False word of the reply; a reply with neither counts as False."""
    match = _VERDICT.search(reply)
    return bool(match) and match.group(1).lower() == "true"


class EndpointJudge:
    """An OpenAI-compatible ``/chat/completions`` endpoint, temperature 0 (``liftlm.endpoint.ChatEndpoint``)."""

    def __init__(self, spec: str, timeout: float = 120.0, retries: int = 3):
        self.endpoint = ChatEndpoint(spec, "--judge", KEY_VARIABLES, timeout=timeout, retries=retries)
        self.name = self.endpoint.name

    def __call__(self, question: str, gold: str, prediction: str) -> tuple[bool, str]:
        try:
            reply = self.endpoint.chat(judge_messages(question, gold, prediction), max_tokens=8)
        except LiftError as e:
            raise LiftError(f"{e}; the predictions are kept, rerun to judge them") from None
        return parse_verdict(reply), reply.strip()


class LocalJudge:
    """A local causal LM (loaded through liftlm.models), greedy, through its chat template if it has one."""

    def __init__(self, spec: str, device: str | None = None, max_new_tokens: int = 8):
        from ..models import load_model

        try:
            self.loaded = load_model(spec, device)
        except LiftError as e:
            raise LiftError(f"--judge: {str(e).removeprefix('--model: ')}") from None
        self.name = self.loaded.model_id
        self.max_new_tokens = max_new_tokens

    def _prompt_ids(self, messages: list[dict]) -> list[int]:
        tok = self.loaded.tokenizer
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            text = messages[0]["content"] + "\nAnswer:"
        return tok.encode(text, add_special_tokens=False)

    def __call__(self, question: str, gold: str, prediction: str) -> tuple[bool, str]:
        from ..infer import generate

        ids = self._prompt_ids(judge_messages(question, gold, prediction))
        reply = generate(self.loaded.model, self.loaded.tokenizer, ids, self.max_new_tokens)
        return parse_verdict(reply), reply.strip()


def make_judge(spec: str, device: str | None = None):
    """The judge named by ``--judge``: an endpoint URL (``http(s)://…/v1#MODEL``) or a local model."""
    if not spec.strip():
        raise LiftError("--judge is empty; give a model (hub id, directory, .gguf) or an endpoint URL#MODEL")
    return EndpointJudge(spec) if is_endpoint(spec) else LocalJudge(spec, device)
