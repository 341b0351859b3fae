# lumen batch: 200 prompts, kill -9 and --resume, greedy output against `lumen complete`, malformed
# lines, --strict, an existing output file, --n-samples, chat messages.
source "$(dirname "$0")/lib.sh"
M=$(test_model) || { fail batch-model "cannot fetch the test model"; exit 0; }
P=$ROOT/prompts/batch-200.txt
B=("$LUMEN" batch -m "$M" --device cpu -c 256)

# check_jsonl NAME FILE PYTHON: FILE parses as JSONL (strict UTF-8); PYTHON asserts on `rows`.
check_jsonl() {
  local name=$1 file=$2 code=$3 err
  if err=$(python3 -c "
import json, sys, collections
rows = [json.loads(l) for l in open(sys.argv[1], encoding='utf-8', errors='strict').read().split('\n') if l]
$code
" "$file" 2>&1); then pass "$name"; else fail "$name" "$(printf '%s' "$err" | tail -3)"; fi
}

# 200 prompts, one run.
start=$(date +%s)
"${B[@]}" -f "$P" -o "$TMP/full.jsonl" -n 8 --temp 0 2>"$TMP/full.err"; rc=$?
[ $rc -eq 0 ] && pass "batch: 200 prompts exit 0 ($(($(date +%s) - start)) s)" || fail "batch: 200 prompts" "exit $rc: $(tail -3 "$TMP/full.err")"
check_jsonl "batch: 200 lines, 200 distinct ids, valid records" "$TMP/full.jsonl" "
assert len(rows) == 200, len(rows)
assert sorted(r['id'] for r in rows) == list(range(1, 201)), 'ids'
for r in rows:
    assert 0 <= r['n_completion'] <= 8 and r['n_prompt'] > 0, r
    assert r['finish_reason'] in ('stop', 'length'), r
    assert r['finish_reason'] == 'stop' or r['n_completion'] == 8, r
    assert isinstance(r['text'], str) and r['timings']['gen_ms'] >= 0, r
"
grep -q "lumen batch: 200 generations" "$TMP/full.err" && pass "batch: summary line" || fail "batch: summary line" "$(tail -2 "$TMP/full.err")"

# kill -9 in the middle, then --resume: every id exactly once, and the same greedy text as the full run.
"${B[@]}" -f "$P" -o "$TMP/kill.jsonl" -n 8 --temp 0 2>/dev/null &
pid=$!
for _ in $(seq 600); do
  [ "$(cat "$TMP/kill.jsonl" 2>/dev/null | wc -l)" -ge 60 ] && break
  kill -0 $pid 2>/dev/null || break
  sleep 0.1
done
kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
before=$(wc -l <"$TMP/kill.jsonl")
if [ "$before" -ge 1 ] && [ "$before" -lt 200 ]; then pass "batch: killed after $before of 200"; else fail "batch: kill in the middle" "$before lines when killed"; fi
"${B[@]}" -f "$P" -o "$TMP/kill.jsonl" -n 8 --temp 0 --resume 2>"$TMP/resume.err" || fail "batch: resume" "exit $?: $(tail -2 "$TMP/resume.err")"
check_jsonl "batch: kill -9 then --resume gives every id once, same text" "$TMP/kill.jsonl" "
ids = collections.Counter(r['id'] for r in rows)
assert sorted(ids) == list(range(1, 201)) and max(ids.values()) == 1, ids.most_common(3)
full = {r['id']: r['text'] for r in (json.loads(l) for l in open('$TMP/full.jsonl'))}
diff = [r['id'] for r in rows if r['text'] != full[r['id']]]
assert len(diff) <= 10, 'texts differ for ids %s' % diff
"

# A torn last line (killed mid-write) is dropped and its prompt generated again.
head -12 "$P" >"$TMP/p12.txt"
python3 - "$TMP/full.jsonl" "$TMP/torn.jsonl" <<'EOF'
import json, sys
rows = {json.loads(l)['id']: l for l in open(sys.argv[1])}
with open(sys.argv[2], 'w') as f:
    f.write(''.join(rows[i] for i in range(1, 11)) + rows[11][:25])
EOF
"${B[@]}" -f "$TMP/p12.txt" -o "$TMP/torn.jsonl" -n 8 --temp 0 --resume 2>"$TMP/torn.err"
grep -q "torn.jsonl:11: dropped a torn last line" "$TMP/torn.err" && pass "batch: torn last line reported" \
  || fail "batch: torn last line reported" "$(cat "$TMP/torn.err")"
check_jsonl "batch: torn last line dropped, ids 1-12 once" "$TMP/torn.jsonl" "
assert sorted(r['id'] for r in rows) == list(range(1, 13)), [r['id'] for r in rows]
"
cp "$TMP/torn.jsonl" "$TMP/torn-before.jsonl"
"${B[@]}" -f "$TMP/p12.txt" -o "$TMP/torn.jsonl" -n 8 --temp 0 --resume 2>"$TMP/again.err"
cmp -s "$TMP/torn.jsonl" "$TMP/torn-before.jsonl" && grep -q "nothing to do" "$TMP/again.err" \
  && pass "batch: resume of a finished run does nothing" || fail "batch: finished resume" "$(cat "$TMP/again.err")"

# SIGTERM (or Ctrl-C): stops after the current step with a hint to resume; --resume finishes.
"${B[@]}" -f "$TMP/p12.txt" -o "$TMP/term.jsonl" -n 16 -np 2 --temp 0 2>"$TMP/term.err" &
pid=$!
for _ in $(seq 600); do [ -s "$TMP/term.jsonl" ] && break; kill -0 $pid 2>/dev/null || break; sleep 0.1; done
kill -TERM $pid 2>/dev/null; wait $pid; rc=$?
"${B[@]}" -f "$TMP/p12.txt" -o "$TMP/term.jsonl" -n 16 -np 2 --temp 0 --resume 2>/dev/null
if [ $rc -eq 143 ] && grep -q "stopped by SIGTERM.*--resume" "$TMP/term.err"; then pass "batch: SIGTERM stops cleanly (exit 143)"
else fail "batch: SIGTERM" "rc $rc: $(tail -2 "$TMP/term.err")"; fi
check_jsonl "batch: SIGTERM then --resume gives ids 1-12 once" "$TMP/term.jsonl" "
assert sorted(r['id'] for r in rows) == list(range(1, 13)), [r['id'] for r in rows]
"

# Greedy batch output equals `lumen complete` on the prompt alone (every 10th prompt).
same=0; total=0; diffs=""
for i in $(seq 5 10 200); do
  python3 -c '
import sys
line = open(sys.argv[1], encoding="utf-8").read().split("\n")[int(sys.argv[2]) - 1]
out, k = [], 0
while k < len(line):  # the text-file escapes: \n \t \\
    if line[k] == "\\" and k + 1 < len(line) and line[k + 1] in "nt\\":
        out.append({"n": "\n", "t": "\t", "\\": "\\"}[line[k + 1]]); k += 2
    else:
        out.append(line[k]); k += 1
sys.stdout.write("".join(out))' "$P" "$i" >"$TMP/one.txt"
  "$LUMEN" complete -m "$M" --device cpu -c 256 -f "$TMP/one.txt" -n 8 --temp 0 >"$TMP/one.out" 2>/dev/null
  total=$((total + 1))
  if python3 -c '
import json, sys
want = open(sys.argv[1], encoding="utf-8", errors="replace").read()
want = want[:-1] if want.endswith("\n") else want
got = [json.loads(l) for l in open(sys.argv[2])]
got = [r["text"] for r in got if r["id"] == int(sys.argv[3])][0]
sys.exit(0 if got == want else 1)' "$TMP/one.out" "$TMP/full.jsonl" "$i"; then same=$((same + 1)); else diffs="$diffs $i"; fi
done
if [ $((same * 100)) -ge $((total * 95)) ]; then pass "batch: greedy equals complete for $same of $total prompts"
else fail "batch: greedy equals complete" "$same of $total (differ:$diffs)"; fi

# Malformed lines: reported with their line numbers, the rest still run.
long=$(python3 -c 'print(" ".join(["word"] * 400))')
cat >"$TMP/bad.jsonl" <<EOF
{"id": "a", "prompt": "The capital of France is"}
{"id": "b", "prompt": "unterminated}
{"id": "c"}
{"id": "d", "prompt": ""}
{"id": "e", "prompt": "$long"}
{"id": "f", "prompt": "Hello", "temperature": "hot"}
{"id": "g", "prompt": "Once upon a time", "n_predict": 3}
EOF
"${B[@]}" -f "$TMP/bad.jsonl" -o "$TMP/bad.out" -n 4 --temp 0 2>"$TMP/bad.err"; rc=$?
ok=1
for l in 2 3 4 5 6; do grep -q "bad.jsonl:$l: " "$TMP/bad.err" || ok=0; done
[ $rc -eq 0 ] && [ $ok -eq 1 ] && pass "batch: malformed lines reported by line number" || fail "batch: malformed lines" "rc $rc: $(cat "$TMP/bad.err")"
check_jsonl "batch: the good lines still run" "$TMP/bad.out" "
assert sorted(r['id'] for r in rows) == ['a', 'g'], rows
assert [r for r in rows if r['id'] == 'g'][0]['n_completion'] <= 3
"

# --strict: exit 1 before generating anything.
"${B[@]}" -f "$TMP/bad.jsonl" -o "$TMP/strict.out" -n 4 --strict 2>"$TMP/strict.err"; rc=$?
if [ $rc -eq 1 ] && grep -q "^lumen: error: .*bad.jsonl:6: " "$TMP/strict.err" && [ ! -s "$TMP/strict.out" ]; then
  pass "batch: --strict stops with exit 1"; else fail "batch: --strict" "rc $rc: $(cat "$TMP/strict.err")"; fi
printf '{"prompt": "hi"}\n{"id": 5}\n' >"$TMP/one-bad.jsonl"
expect_error "batch: --strict, one bad line" "one-bad.jsonl:2: .*missing \"prompt\"" \
  "${B[@]}" -f "$TMP/one-bad.jsonl" -o "$TMP/strict2.out" --strict
printf '{"id": 1, "prompt": "a"}\n{"id": 2, "prompt": "b"}\n{"id": 1, "prompt": "c"}\n' >"$TMP/dup.jsonl"
expect_error "batch: duplicate ids name both lines" "dup.jsonl:3: id 1 repeats the id of line 1" \
  "${B[@]}" -f "$TMP/dup.jsonl" -o "$TMP/dup.out"

# An existing output without --resume is an error; nothing is overwritten.
cp "$TMP/bad.out" "$TMP/keep.out"
expect_error "batch: existing output needs --resume" "keep.out: the file exists .*--resume" \
  "${B[@]}" -f "$TMP/bad.jsonl" -o "$TMP/keep.out"
cmp -s "$TMP/keep.out" "$TMP/bad.out" && pass "batch: existing output untouched" || fail "batch: existing output" "changed"

# --n-samples: K records per id, distinct (id, sample).
head -3 "$P" >"$TMP/p3.txt"
"${B[@]}" -f "$TMP/p3.txt" -o "$TMP/samples.jsonl" -n 6 --n-samples 3 --temp 0.9 --seed 5 2>/dev/null
check_jsonl "batch: --n-samples 3 gives 3 records per id" "$TMP/samples.jsonl" "
keys = sorted((r['id'], r['sample']) for r in rows)
assert keys == [(i, s) for i in (1, 2, 3) for s in (0, 1, 2)], keys
"

# JSONL with chat messages and per-prompt settings; --chat on plain prompts.
"${B[@]}" -f "$ROOT/prompts/batch-example.jsonl" -n 4 >"$TMP/ex.jsonl" 2>"$TMP/ex.err"
check_jsonl "batch: example JSONL (messages, ids, settings) to stdout" "$TMP/ex.jsonl" "
assert sorted(map(str, (r['id'] for r in rows))) == sorted(['capital', 'poem', 'chat-1', 'chat-2', '7', '6']), rows
limit = {'capital': 16, 'poem': 4, 'chat-1': 48, 'chat-2': 32, 7: 32, 6: 24}  # n_predict, else -n 4
assert all(r['n_completion'] <= limit[r['id']] for r in rows), rows
"
printf 'What is 2 + 2?\n' >"$TMP/q.txt"
"${B[@]}" -f "$TMP/q.txt" -n 4 --temp 0 --chat >"$TMP/chat.jsonl" 2>/dev/null
"${B[@]}" -f "$TMP/q.txt" -n 4 --temp 0 >"$TMP/plain.jsonl" 2>/dev/null
printf 'You answer in one word.\n' >"$TMP/system.txt"
"${B[@]}" -f "$TMP/q.txt" -n 4 --temp 0 --chat --system-file "$TMP/system.txt" >"$TMP/system.jsonl" 2>/dev/null
check_jsonl "batch: --chat applies the template, --system-file adds a system turn" "$TMP/chat.jsonl" "
plain = json.loads(open('$TMP/plain.jsonl').read())
system = json.loads(open('$TMP/system.jsonl').read())
assert rows[0]['n_prompt'] > plain['n_prompt'] + 5, (rows[0], plain)
assert system['n_prompt'] > rows[0]['n_prompt'] + 3, (system, rows[0])
"
expect_error "batch: --system without chat prompts" "--system applies to chat prompts" \
  "${B[@]}" -f "$TMP/q.txt" --system "Be brief."

# Bad flags: one line naming the flag.
expect_error "batch: -np 0" "-np 0" "${B[@]}" -f "$P" -np 0
expect_error "batch: --n-samples 0" "--n-samples 0" "${B[@]}" -f "$P" --n-samples 0
expect_error "batch: --resume needs -o" "--resume needs -o" "${B[@]}" -f "$P" --resume
expect_error "batch: missing prompts file" "nope.txt: cannot open" "${B[@]}" -f "$TMP/nope.txt"
expect_error "batch: bad input format" "input-format" "${B[@]}" -f "$P" --input-format csv
