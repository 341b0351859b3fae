# lumen batch with prompt lookup and a draft model: greedy texts identical to plain batch, drafted and
# accepted in every record and in the summary, --n-samples (shared prefix blocks) and --resume.
source "$(dirname "$0")/lib.sh"
M=$(test_model) || { fail batch-spec-model "cannot fetch the test model"; exit 0; }
S=("$LUMEN" batch -m "$M" --device cpu -t 2 -c 320 --chat -np 3)
B=("${S[@]}" -n 40 --temp 0)
cat >"$TMP/p.txt" <<'EOF'
Repeat this sentence exactly, twice: the quick brown fox jumps over the lazy dog.
Count from 1 to 20, separated by commas.
Write the word hello ten times.
List the days of the week, then list them again.
EOF

# check_jsonl NAME FILE PYTHON: FILE parses as JSONL; PYTHON asserts on `rows` (and `plain`, the texts
# of the plain run by id).
check_jsonl() {
  local name=$1 file=$2 code=$3 err
  if err=$(python3 -c "
import json, sys
load = lambda f: [json.loads(l) for l in open(f, encoding='utf-8').read().split('\n') if l]
rows = load(sys.argv[1])
plain = {r['id']: r['text'] for r in load('$TMP/plain.jsonl')}
$code
" "$file" 2>&1); then pass "$name"; else fail "$name" "$(printf '%s' "$err" | tail -3)"; fi
}

"${B[@]}" -f "$TMP/p.txt" -o "$TMP/plain.jsonl" 2>"$TMP/plain.err" || fail "batch-spec: plain run" "$(tail -2 "$TMP/plain.err")"
"${B[@]}" -f "$TMP/p.txt" -o "$TMP/look.jsonl" --lookup 2>"$TMP/look.err" || fail "batch --lookup: run" "$(tail -2 "$TMP/look.err")"
check_jsonl "batch --lookup: same greedy texts as without" "$TMP/look.jsonl" "
assert sorted(r['id'] for r in rows) == [1, 2, 3, 4], rows
for r in rows:
    assert r['text'] == plain[r['id']], (r['id'], r['text'], plain[r['id']])
"
check_jsonl "batch --lookup: records carry drafted, accepted, acceptance" "$TMP/look.jsonl" "
for r in rows:
    assert 0 <= r['accepted'] <= r['drafted'], r
    assert abs(r['acceptance'] - (r['accepted'] / r['drafted'] if r['drafted'] else 0)) < 1e-3, r
assert sum(r['accepted'] for r in rows) > 0, 'nothing accepted'
"
check_jsonl "batch: no speculation fields without --lookup" "$TMP/plain.jsonl" "
assert all('drafted' not in r and 'accepted' not in r for r in rows), rows
"
if grep -qE "^speculative \(lookup\): drafted [0-9]+, accepted [1-9][0-9]* \([0-9.]+%\), mean accepted length [0-9.]+ over [0-9]+ rounds, [0-9.]+ tokens per target pass, [0-9.]+ t/s effective$" "$TMP/look.err"
then pass "batch --lookup: statistics line on stderr"; else fail "batch --lookup: statistics line" "$(cat "$TMP/look.err")"; fi
grep -q "^speculative" "$TMP/plain.err" && fail "batch: no statistics without speculation" "$(cat "$TMP/plain.err")" \
  || pass "batch: no statistics without speculation"

# Samples of one prompt share its prefix blocks; greedy, each equals the plain text.
"${B[@]}" -f "$TMP/p.txt" -o "$TMP/samples.jsonl" --lookup --n-samples 2 --draft-max 6 2>/dev/null
check_jsonl "batch --lookup --n-samples 2: shared prefix blocks, same texts" "$TMP/samples.jsonl" "
assert sorted((r['id'], r['sample']) for r in rows) == [(i, s) for i in (1, 2, 3, 4) for s in (0, 1)], rows
assert all(r['text'] == plain[r['id']] for r in rows), [r['id'] for r in rows if r['text'] != plain[r['id']]]
assert any(r['n_prompt_cached'] > 0 for r in rows), rows
"

# --resume: a run that wrote one record (and a torn line) continues with lookup.
head -1 "$TMP/look.jsonl" >"$TMP/resume.jsonl"
printf '{"id": 2, "n_pro' >>"$TMP/resume.jsonl"
"${B[@]}" -f "$TMP/p.txt" -o "$TMP/resume.jsonl" --lookup --resume 2>"$TMP/resume.err" \
  || fail "batch --lookup --resume" "$(tail -2 "$TMP/resume.err")"
check_jsonl "batch --lookup --resume: every id once, same texts" "$TMP/resume.jsonl" "
assert sorted(r['id'] for r in rows) == [1, 2, 3, 4], [r['id'] for r in rows]
assert all(r['text'] == plain[r['id']] for r in rows), rows
assert all('drafted' in r for r in rows), rows
"

# The model as its own draft: every guess kept, the same texts; sampled runs are reproducible.
"${B[@]}" -f "$TMP/p.txt" -o "$TMP/self.jsonl" --draft-model "$M" --draft-max 4 --draft-p-min 0 2>"$TMP/self.err" \
  || fail "batch --draft-model: run" "$(tail -2 "$TMP/self.err")"
check_jsonl "batch --draft-model (itself): same greedy texts, every guess kept" "$TMP/self.jsonl" "
assert sorted(r['id'] for r in rows) == [1, 2, 3, 4], rows
assert all(r['text'] == plain[r['id']] for r in rows), [r['id'] for r in rows if r['text'] != plain[r['id']]]
assert all(r['accepted'] == r['drafted'] for r in rows), rows
assert sum(r['drafted'] for r in rows) > 0, rows
"
grep -qE "^speculative \(draft model\): drafted ([0-9]+), accepted \1 \(100.0%\), .* [0-9]+ draft passes, [0-9.]+ s drafting$" "$TMP/self.err" \
  && pass "batch --draft-model: statistics line with draft passes" || fail "batch --draft-model: statistics" "$(tail -2 "$TMP/self.err")"
head -2 "$TMP/p.txt" >"$TMP/p2.txt"
for k in 1 2; do
  "${S[@]}" -f "$TMP/p2.txt" -o "$TMP/sampled$k.jsonl" -n 16 --draft-model "$M" --temp 0.8 --seed 3 --n-samples 2 2>/dev/null
done
check_jsonl "batch --draft-model, sampled with a seed: reproducible" "$TMP/sampled1.jsonl" "
other = {(r['id'], r['sample']): r['text'] for r in load('$TMP/sampled2.jsonl')}
assert len(rows) == 4 and all(other[(r['id'], r['sample'])] == r['text'] for r in rows), rows
"
"$LUMEN" synth --preset tiny --type q8_0 -o "$TMP/tiny.gguf" 2>/dev/null
expect_error "batch: incompatible draft model" "draft-model .*tiny.gguf: its vocabulary has 512 tokens" \
  "${B[@]}" -f "$TMP/p.txt" --draft-model "$TMP/tiny.gguf"

expect_error "batch: --draft-max needs a drafter" "--draft-max needs --lookup or --draft-model" \
  "${B[@]}" -f "$TMP/p.txt" --draft-max 4
expect_error "batch: --lookup-ngram-min 0" "--lookup-ngram-min 0" "${B[@]}" -f "$TMP/p.txt" --lookup --lookup-ngram-min 0
expect_error "batch: lookup and draft model" "at most one of --lookup or --draft-model" \
  "${B[@]}" -f "$TMP/p.txt" --lookup --draft-model "$M"
