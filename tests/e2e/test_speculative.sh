# Speculative and prompt-lookup decoding through the binary: greedy text identical with and without,
# statistics on stderr, errors for bad flags and incompatible draft models.
source "$(dirname "$0")/lib.sh"
M=$(test_model) || { fail spec-model "cannot fetch the test model"; exit 0; }
P="$ROOT/prompts/lookup-rewrite.txt"
run() { "$LUMEN" complete -m "$M" -f "$P" -n 48 --temp 0 --device cpu -t 2 "$@"; }

plain=$(run 2>"$TMP/plain.err")
look=$(run --lookup 2>"$TMP/look.err")
if [ -n "$plain" ] && [ "$plain" = "$look" ]; then pass "complete --lookup: same greedy text"
else fail "complete --lookup: same greedy text" "plain '$plain' vs lookup '$look'"; fi
if grep -qE "^speculative \(lookup\): drafted [0-9]+, accepted [0-9]+ \([0-9.]+%\), mean accepted length [0-9.]+ over [0-9]+ rounds, [0-9.]+ tokens per target pass, [0-9.]+ t/s effective" "$TMP/look.err"
then pass "complete --lookup: statistics on stderr"; else fail "complete --lookup: statistics" "$(cat "$TMP/look.err")"; fi
if grep -qE "accepted [1-9][0-9]*" "$TMP/look.err"; then pass "complete --lookup: guesses accepted on a rewrite prompt"
else fail "complete --lookup: guesses accepted" "$(grep speculative "$TMP/look.err")"; fi
grep -q speculative "$TMP/plain.err" && fail "complete: no statistics without speculation" "$(cat "$TMP/plain.err")" \
  || pass "complete: no statistics without speculation"

look2=$(run --lookup --lookup-ngram-min 1 --lookup-ngram-max 3 --draft-max 5 --draft-fixed 2>/dev/null)
[ "$plain" = "$look2" ] && pass "complete --lookup (n-gram 1..3, fixed 5): same greedy text" \
  || fail "complete --lookup (n-gram 1..3)" "'$look2'"

# The model as its own draft: every guess is kept.
self=$(run --draft-model "$M" --draft-max 4 --draft-p-min 0 2>"$TMP/self.err")
[ "$plain" = "$self" ] && pass "complete --draft-model: same greedy text" || fail "complete --draft-model" "'$self'"
grep -qE "speculative \(draft model\): drafted ([0-9]+), accepted \1 \(100.0%\)" "$TMP/self.err" \
  && pass "complete --draft-model: a model drafting for itself is always right" \
  || fail "complete --draft-model: acceptance" "$(grep speculative "$TMP/self.err")"

s1=$("$LUMEN" complete -m "$M" -p "Once upon a time" -n 16 --temp 0.8 --seed 7 --lookup --device cpu 2>/dev/null)
s2=$("$LUMEN" complete -m "$M" -p "Once upon a time" -n 16 --temp 0.8 --seed 7 --lookup --device cpu 2>/dev/null)
[ -n "$s1" ] && [ "$s1" = "$s2" ] && pass "complete --lookup: seeded sampling is reproducible" \
  || fail "complete --lookup: seeded sampling" "'$s1' vs '$s2'"

# chat, scripted: the same replies with and without lookup.
msg='Repeat this sentence exactly, twice: the quick brown fox jumps over the lazy dog.'
c1=$(printf '%s\n' "$msg" | "$LUMEN" chat -m "$M" --temp 0 -n 40 --device cpu 2>/dev/null)
c2=$(printf '%s\n' "$msg" | "$LUMEN" chat -m "$M" --temp 0 -n 40 --device cpu --lookup 2>"$TMP/chat.err")
[ -n "$c1" ] && [ "$c1" = "$c2" ] && pass "chat --lookup: same greedy reply" || fail "chat --lookup" "'$c1' vs '$c2'"
grep -q "speculative (lookup)" "$TMP/chat.err" && pass "chat --lookup: statistics on stderr" \
  || fail "chat --lookup: statistics" "$(cat "$TMP/chat.err")"

"$LUMEN" synth --preset tiny --type q8_0 -o "$TMP/tiny.gguf" 2>/dev/null
expect_error "spec: incompatible draft vocabulary" "draft-model .*tiny.gguf: its vocabulary has 512 tokens, the target's 49152" \
  "$LUMEN" complete -m "$M" -p hi -n 4 --device cpu --draft-model "$TMP/tiny.gguf"
expect_error "spec: missing draft model" "draft-model.*nope.gguf" "$LUMEN" complete -m "$M" -p hi --device cpu --draft-model "$TMP/nope.gguf"
expect_error "spec: lookup and draft model" "at most one of --lookup or --draft-model" \
  "$LUMEN" complete -m "$M" -p hi --device cpu --lookup --draft-model "$M"
expect_error "spec: draft-max 0" "--draft-max 0" "$LUMEN" complete -m "$M" -p hi --device cpu --lookup --draft-max 0
expect_error "spec: draft-min above draft-max" "--draft-min 5" "$LUMEN" complete -m "$M" -p hi --device cpu --lookup --draft-max 2 --draft-min 5
expect_error "spec: ngram-min 0" "--lookup-ngram-min 0" "$LUMEN" complete -m "$M" -p hi --device cpu --lookup --lookup-ngram-min 0
expect_error "spec: ngram-max below min" "--lookup-ngram-max 1" "$LUMEN" complete -m "$M" -p hi --device cpu --lookup --lookup-ngram-min 2 --lookup-ngram-max 1
expect_error "spec: p-min out of range" "--draft-p-min 1.5" "$LUMEN" complete -m "$M" -p hi --device cpu --draft-model "$M" --draft-p-min 1.5
expect_error "spec: draft-max without a drafter" "--draft-max needs --lookup or --draft-model" "$LUMEN" complete -m "$M" -p hi --device cpu --draft-max 4
expect_error "spec: ngram flag without lookup" "--lookup-ngram-max needs --lookup" "$LUMEN" complete -m "$M" -p hi --device cpu --lookup-ngram-max 4
expect_error "spec: chat checks too" "--draft-min 5" "$LUMEN" chat -m "$M" --device cpu --lookup --draft-max 2 --draft-min 5
