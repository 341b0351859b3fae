# lumen chat: scripted mode (stdin not a terminal), KV reuse against a full re-read, context shift,
# flag errors, and an interactive session driven through tmux as a person would type it.
source "$(dirname "$0")/lib.sh"
M=$(test_model) || { fail chat-model "cannot fetch the test model"; exit 0; }
CHAT=("$LUMEN" chat -m "$M" --device cpu --temp 0)
TURNS=$ROOT/prompts/chat-turns.txt

# --- Scripted mode: one turn per line, only the replies on stdout ---------------------------------
out=$("${CHAT[@]}" -n 16 <"$TURNS" 2>"$TMP/err"); rc=$?
if [ $rc -eq 0 ]; then pass "chat scripted: exit 0"; else fail "chat scripted: exit" "rc $rc: $(cat "$TMP/err")"; fi
printf '%s\n' "$out" | sed -n 1p | grep -q "Paris" && pass "chat scripted: first reply answers it" \
  || fail "chat scripted: first reply" "$out"
printf '%s\n' "$out" | grep -q "Berlin" && pass "chat scripted: second turn sees the question" \
  || fail "chat scripted: second reply" "$out"
if printf '%s\n' "$out" | grep -qE '^> |lumen chat|/help'; then fail "chat scripted: stdout holds only replies" "$out"
else pass "chat scripted: stdout holds only replies"; fi
n_lines=$(printf '%s\n' "$out" | wc -l)
[ "$n_lines" -ge 4 ] && pass "chat scripted: a reply per turn" || fail "chat scripted: reply count" "$n_lines lines: $out"

# Commands work in scripted mode and write to stderr only.
printf 'Hi\n/stats\n' | "${CHAT[@]}" -n 4 >"$TMP/out" 2>"$TMP/err"
if grep -q "cache: [0-9]* of [0-9]* tokens | 2 messages" "$TMP/err" && ! grep -q "cache:" "$TMP/out"; then
  pass "chat scripted: /stats on stderr"
else fail "chat scripted: /stats" "out: $(cat "$TMP/out") err: $(cat "$TMP/err")"; fi

# --- KV reuse: greedy replies equal a full re-read of the history every turn ---------------------
# With -b 1 every token goes through the same kernels either way: this checks the cache bookkeeping.
a=$("${CHAT[@]}" -n 16 -b 1 <"$TURNS" 2>/dev/null); b=$("${CHAT[@]}" -n 16 -b 1 --no-kv-reuse <"$TURNS" 2>/dev/null)
if [ -n "$a" ] && [ "$a" = "$b" ]; then pass "chat: KV reuse == full re-read (greedy, -b 1)"
else fail "chat: KV reuse == full re-read (-b 1)" "reuse: '$a' full: '$b'"; fi
# With the default batch, the re-read reads earlier replies in batches, reuse read them one token at a
# time: equal only if the engine's batched and single-token paths agree.
a=$("${CHAT[@]}" -n 16 <"$TURNS" 2>/dev/null); b=$("${CHAT[@]}" -n 16 --no-kv-reuse <"$TURNS" 2>/dev/null)
if [ -n "$a" ] && [ "$a" = "$b" ]; then pass "chat: KV reuse == full re-read (greedy, default batch)"
else fail "chat: KV reuse == full re-read (default batch)" "the engine's batched and one-token evaluations give different logits (the -b 1 check covers the chat's own bookkeeping); reuse: '$a' full: '$b'"; fi

# /save then /load in a new process continues the same conversation.
head -2 "$TURNS" >"$TMP/first2"; echo "/save $TMP/saved.json" >>"$TMP/first2"
"${CHAT[@]}" -n 16 --no-kv-reuse <"$TMP/first2" >/dev/null 2>&1
{ echo "/load $TMP/saved.json"; sed -n 3p "$TURNS"; } | "${CHAT[@]}" -n 16 --no-kv-reuse >"$TMP/loaded" 2>/dev/null
head -3 "$TURNS" | "${CHAT[@]}" -n 16 --no-kv-reuse 2>/dev/null | tail -n "$(wc -l <"$TMP/loaded")" >"$TMP/direct"
if [ -s "$TMP/loaded" ] && cmp -s "$TMP/loaded" "$TMP/direct"; then pass "chat scripted: /load continues a /save'd chat"
else fail "chat scripted: /save + /load" "loaded: '$(cat "$TMP/loaded")' direct: '$(cat "$TMP/direct")'"; fi

# Context shift: a small context forgets old turns and goes on; --no-context-shift stops with an error.
"${CHAT[@]}" -n 16 -c 96 <"$TURNS" >"$TMP/out" 2>"$TMP/err"; rc=$?
if [ $rc -eq 0 ] && grep -q "context full: forgot the oldest 2 messages" "$TMP/err" && [ "$(wc -l <"$TMP/out")" -ge 4 ]; then
  pass "chat: context shift forgets the oldest turns"
else fail "chat: context shift" "rc $rc out: $(cat "$TMP/out") err: $(cat "$TMP/err")"; fi
"${CHAT[@]}" -n 16 -c 96 --no-context-shift <"$TURNS" >"$TMP/out" 2>"$TMP/err"; rc=$?
if [ $rc -eq 1 ] && grep -q "^lumen: error: context full.*--no-context-shift" "$TMP/err"; then
  pass "chat: --no-context-shift gives a clear error"
else fail "chat: --no-context-shift" "rc $rc err: $(cat "$TMP/err")"; fi

# The system prompt reaches the model (greedy answers follow it).
printf 'You are a pirate captain.\nYou always talk like a pirate.\n' >"$TMP/system.txt"
ans=$(echo "Who are you?" | "${CHAT[@]}" -n 24 --system-file "$TMP/system.txt" 2>/dev/null)
plain=$(echo "Who are you?" | "${CHAT[@]}" -n 24 2>/dev/null)
if printf '%s' "$ans" | grep -qiE "pirate|captain|aye|arr" && ! printf '%s' "$plain" | grep -qiE "pirate|captain|aye|arr"; then
  pass "chat: --system-file is used"
else fail "chat: --system-file" "with: '$ans' without: '$plain'"; fi

# --jinja runs the model's own template: SmolLM2's is ChatML once a system prompt is given, so the
# replies match the built-in family's; without one it adds its default system prompt.
a=$(head -2 "$TURNS" | "${CHAT[@]}" -n 16 -b 1 --system "Be brief." 2>/dev/null)
b=$(head -2 "$TURNS" | "${CHAT[@]}" -n 16 -b 1 --system "Be brief." --jinja 2>"$TMP/err")
if [ -n "$a" ] && [ "$a" = "$b" ]; then pass "chat: --jinja renders SmolLM2's template like chatml"
else fail "chat: --jinja" "builtin: '$a' jinja: '$b' err: $(cat "$TMP/err")"; fi
printf 'Hi\n/stats\n' | "${CHAT[@]}" -n 2 --jinja 2>&1 >/dev/null | grep -q "template jinja" \
  && pass "chat: --jinja is the template in use" || fail "chat: --jinja stats" ""
expect_error "chat: --jinja with --chat-template" "at most one of --jinja or --chat-template" "${CHAT[@]}" --jinja --chat-template chatml

# A model without a chat template falls back to ChatML with a notice.
"$LUMEN" synth --preset tiny --type q8_0 -o "$TMP/tiny.gguf" >/dev/null 2>&1
echo hi | "$LUMEN" chat -m "$TMP/tiny.gguf" -n 2 --device cpu >/dev/null 2>"$TMP/err"
grep -q "no chat template; using chatml" "$TMP/err" && pass "chat: no template -> chatml notice" \
  || fail "chat: no template" "$(cat "$TMP/err")"

expect_error "chat: bad template name" "--chat-template llama9: unknown template" "${CHAT[@]}" --chat-template llama9
expect_error "chat: two system prompts" "at most one of --system or --system-file" "${CHAT[@]}" --system a --system-file b
expect_error "chat: missing system file" "nope.txt: cannot open" "${CHAT[@]}" --system-file "$TMP/nope.txt"
expect_error "chat: bad -n" "-n 0" "${CHAT[@]}" -n 0
expect_error "chat: bad --reasoning" "reasoning" "${CHAT[@]}" --reasoning maybe
echo "/load $TMP/nope.json" >"$TMP/in"
expect_error "chat scripted: /load of a missing file" "nope.json: cannot open" sh -c "\"\$@\" <\"$TMP/in\"" sh "${CHAT[@]}"
printf '{"messages": [{"role": "wizard", "content": "x"}]}' >"$TMP/bad.json"; echo "/load $TMP/bad.json" >"$TMP/in"
expect_error "chat scripted: /load of a bad file" "unknown role" sh -c "\"\$@\" <\"$TMP/in\"" sh "${CHAT[@]}"

printf 'ok \xff\n' >"$TMP/in"
expect_error "chat scripted: invalid UTF-8 input" "not valid UTF-8" sh -c "\"\$@\" <\"$TMP/in\"" sh "${CHAT[@]}"
printf '//stats means what?\n' | "${CHAT[@]}" -n 4 >"$TMP/out" 2>"$TMP/err"
if [ -s "$TMP/out" ] && ! grep -q "cache:" "$TMP/err"; then pass "chat scripted: // sends a message starting with /"
else fail "chat scripted: //" "out: $(cat "$TMP/out") err: $(cat "$TMP/err")"; fi

# --- Interactive, through tmux ----------------------------------------------------------------------
if ! command -v tmux >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get install -y -qq tmux >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq tmux >/dev/null 2>&1; }
  fi
fi
if ! command -v tmux >/dev/null 2>&1; then
  fail "chat interactive" "tmux is not installed and could not be installed (apt-get install tmux): interactive tests NOT run"
  exit 0
fi

SOCK="lumen-chat-test-$$"
tm() { tmux -L "$SOCK" "$@"; }
trap 'tmux -L "$SOCK" kill-server >/dev/null 2>&1; rm -rf "$TMP"' EXIT
screen() { tm capture-pane -p -J -S - -t chat 2>/dev/null | sed 's/[[:space:]]*$//'; }
last_line() { screen | sed '/^[[:space:]]*$/d' | tail -1; }
n_prompts() { screen | grep -cE '^>( |$)'; }
# wait_for PATTERN [SECONDS]: until the pane shows PATTERN (extended regex).
wait_for() {
  local end=$((SECONDS + ${2:-60}))
  while [ $SECONDS -lt $end ]; do screen | grep -qE -- "$1" && return 0; sleep 0.2; done
  return 1
}
# ready [SECONDS] [N]: a bare prompt is the last line (and, given N, it is the N-th prompt).
ready() {
  local end=$((SECONDS + ${1:-90}))
  while [ $SECONDS -lt $end ]; do
    if [ "$(last_line)" = ">" ] && { [ -z "${2:-}" ] || [ "$(n_prompts)" -ge "$2" ]; }; then return 0; fi
    sleep 0.2
  done
  return 1
}
# send TEXT: types TEXT, presses Enter and waits for the next prompt (the reply or command is done).
send() {
  local n; n=$(n_prompts)
  tm send-keys -t chat -l "$1"; tm send-keys -t chat Enter
  ready 120 $((n + 1))
}
start_chat() {  # start_chat ARGS...: a fresh session in an 120x50 pane; the exit code goes to $TMP/exit
  rm -f "$TMP/exit"
  tm kill-session -t chat >/dev/null 2>&1
  tm new-session -d -s chat -x 120 -y 50 \
    "NO_COLOR=1 $(printf '%q ' "${CHAT[@]}" "$@"); echo \$? >$(printf '%q' "$TMP/exit"); sleep 60"
}
exit_code() {  # exit_code: waits for the chat to end and prints its status
  local end=$((SECONDS + 20))
  while [ $SECONDS -lt $end ]; do [ -s "$TMP/exit" ] && { cat "$TMP/exit"; return; }; sleep 0.2; done
  echo "still running"
}

start_chat -n 200
if ready 120; then pass "chat interactive: banner and prompt"; else fail "chat interactive: start" "$(screen)"; exit 0; fi

send "What is the capital of France?" && screen | grep -q "Paris" && pass "chat interactive: first turn" || fail "chat interactive: first turn" "$(screen)"

# Line editing: typed with mistakes, fixed with the arrows, Home/End, Backspace, Delete and Ctrl-W.
n=$(n_prompts)
tm send-keys -t chat -l "Xand of Germny?"; tm send-keys -t chat Left Left Left "a" Home DC End
tm send-keys -t chat -l " junk"; tm send-keys -t chat C-w BSpace Enter
ready 120 $((n + 1)) && screen | grep -q "^> and of Germany?$" && screen | grep -q "Berlin" \
  && pass "chat interactive: line editing and second turn" || fail "chat interactive: line editing" "$(screen)"

# History: Up recalls the last input.
tm send-keys -t chat Up; sleep 0.5
[ "$(last_line)" = "> and of Germany?" ] && pass "chat interactive: Up recalls history" || fail "chat interactive: history" "$(screen)"
tm send-keys -t chat C-u

# Ctrl-C in the middle of a long reply stops it and gives the prompt back.
# The reply has started once the last line is neither the question nor a prompt.
n=$(n_prompts)
tm send-keys -t chat -l "Write a very long story about a dragon and a knight."; tm send-keys -t chat Enter
started=0
for _ in $(seq 300); do
  l=$(last_line)
  case "$l" in ""|">"|"> Write a very long story"*) sleep 0.2 ;; *) started=1; break ;; esac
done
if [ $started = 1 ]; then
  tm send-keys -t chat C-c
  if wait_for "^\[stopped\]$" 20 && ready 20 $((n + 1)); then pass "chat interactive: Ctrl-C stops the reply"
  else fail "chat interactive: Ctrl-C" "$(screen)"; fi
else fail "chat interactive: long reply did not start" "$(screen)"; fi

# Another turn after the interruption, then a multi-line turn (trailing backslash) and a paste.
send "Say hi." && pass "chat interactive: a turn after Ctrl-C" || fail "chat interactive: turn after Ctrl-C" "$(screen)"
n=$(n_prompts)
tm send-keys -t chat -l 'Repeat these two lines:\'; tm send-keys -t chat Enter
wait_for "^\. $|^\.$" 5 && tm send-keys -t chat -l "first line" && tm send-keys -t chat Enter
ready 120 $((n + 1)) || fail "chat interactive: multi-line turn" "$(screen)"
n=$(n_prompts)
tm set-buffer "pasted one
pasted two"
tm paste-buffer -p -t chat; tm send-keys -t chat Enter
ready 120 $((n + 1)) || fail "chat interactive: pasted turn" "$(screen)"

# /save, /reset, /load, /save again: the second file equals the first.
send "/save $TMP/s1.json" && wait_for "saved [0-9]+ messages" 10 || fail "chat interactive: /save" "$(screen)"
if python3 - "$TMP/s1.json" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))["messages"]
users = [x["content"] for x in m if x["role"] == "user"]
assert [x["role"] for x in m] == ["user", "assistant"] * (len(m) // 2), m
assert users[0] == "What is the capital of France?" and users[1] == "and of Germany?", users
assert "Write a very long story" in users[2] and users[3] == "Say hi.", users
assert users[4] == "Repeat these two lines:\nfirst line", users
assert users[5] == "pasted one\npasted two", users
assert "Paris" in m[1]["content"] and m[5]["content"], m
EOF
then pass "chat interactive: /save holds the turns as typed"; else fail "chat interactive: /save contents" "$(cat "$TMP/s1.json")"; fi
n_saved=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["messages"]))' "$TMP/s1.json" 2>/dev/null)
send "/reset"; send "/stats"
wait_for "\| 0 messages \|" 10 && pass "chat interactive: /reset" || fail "chat interactive: /reset" "$(screen)"
send "/load $TMP/s1.json" && wait_for "loaded $n_saved messages" 10 || fail "chat interactive: /load" "$(screen)"
send "/save $TMP/s2.json"
cmp -s "$TMP/s1.json" "$TMP/s2.json" && pass "chat interactive: /save then /load round trip" \
  || fail "chat interactive: /load round trip" "$(diff "$TMP/s1.json" "$TMP/s2.json" 2>&1 | head -5)"
send "What was my first question?" && pass "chat interactive: a turn after /load" || fail "chat interactive: turn after /load" "$(screen)"
send "/nonsense" && screen | grep -q "lumen: error: /nonsense: unknown command" && pass "chat interactive: unknown command, chat goes on" \
  || fail "chat interactive: unknown command" "$(screen)"

tm send-keys -t chat C-d
[ "$(exit_code)" = 0 ] && pass "chat interactive: Ctrl-D exits 0" || fail "chat interactive: Ctrl-D" "exit $(cat "$TMP/exit" 2>/dev/null)"

# Ctrl-C at an empty prompt also exits 0.
start_chat -n 16
ready 120 || fail "chat interactive: restart" "$(screen)"
tm send-keys -t chat C-c
[ "$(exit_code)" = 0 ] && pass "chat interactive: Ctrl-C at an empty prompt exits 0" \
  || fail "chat interactive: Ctrl-C at empty prompt" "exit $(cat "$TMP/exit" 2>/dev/null)"
