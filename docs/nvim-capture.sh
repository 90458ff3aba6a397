#!/usr/bin/env bash
# Records docs/nvim-capture.txt: Neovim with the codedec plugin in tmux, the embedded model
# (SmolLM2-135M), typing a function header and waiting for the ghost text, then <Tab>.
# Usage (from the repository root): bash docs/nvim-capture.sh [model]
set -euo pipefail
ROOT=$(pwd)
MODEL=${1:-smollm2}
WORK=$(mktemp -d)
SOCK=codedec-capture-$$
cat > "$WORK/init.lua" <<LUA
vim.opt.runtimepath:prepend("$ROOT/nvim")
vim.o.number = true
require("codedec").setup({
  cmd = { "$ROOT/.venv/bin/codedec", "serve" },
  model = "$MODEL",
  max_tokens = 48,
  time_budget_ms = 20000, -- the first request after start-up is slow (warm-up)
  settings = { telemetryPath = "$WORK/telemetry.jsonl" },
})
LUA
printf 'def is_prime(n: int) -> bool:\n    """True when n is a prime number."""\n' > "$WORK/primes.py"
tmux -L "$SOCK" new-session -d -s cap -x 92 -y 18 -c "$WORK" \
  "XDG_STATE_HOME=$WORK/state $ROOT/.venv/bin/nvim --clean -u $WORK/init.lua primes.py"
trap 'tmux -L "$SOCK" kill-server 2>/dev/null || true; rm -rf "$WORK"' EXIT
frame() { { echo "---- $1"; tmux -L "$SOCK" capture-pane -p -t cap; } >> "$WORK/capture.txt"; }
for _ in $(seq 120); do  # wait for the model (:CodedecStatus says idle)
  sleep 1
  tmux -L "$SOCK" send-keys -t cap Escape ":CodedecStatus" Enter
  tmux -L "$SOCK" capture-pane -p -t cap | grep -q "codedec: idle" && break
done
frame ":CodedecStatus once the model is loaded"
# Warm-up: the first completion after start-up is slow on a small CPU machine; do one and undo it.
tmux -L "$SOCK" send-keys -t cap "Go" "if n < 2:" Enter
sleep "${WARMUP:-20}"
tmux -L "$SOCK" send-keys -t cap Escape "u"
sleep 1
tmux -L "$SOCK" send-keys -t cap "Go" "if n < 2:" Enter
sleep "${WAIT:-8}"
frame "typed 'if n < 2:' + Enter (no other key); the grey text after the cursor is the suggestion (Insert mode)"
tmux -L "$SOCK" send-keys -t cap Tab
sleep 1
tmux -L "$SOCK" send-keys -t cap Escape ":CodedecStatus" Enter
sleep 0.5
frame "<Tab> accepted it; <Esc> :CodedecStatus"
cp "$WORK/capture.txt" "$ROOT/docs/nvim-capture.txt"
cat "$ROOT/docs/nvim-capture.txt"; cut -c1-400 "$WORK/telemetry.jsonl" || true
