# complete, perplexity, synth, quantize and bench through the binary.
source "$(dirname "$0")/lib.sh"
M=$(test_model) || { fail generate-model "cannot fetch the test model"; exit 0; }

out=$("$LUMEN" complete -m "$M" -p "The capital of France is" -n 8 --temp 0 --device cpu 2>"$TMP/err")
if printf '%s' "$out" | grep -q "Paris"; then pass "complete: greedy answer mentions Paris"; else fail "complete: Paris" "$out"; fi
if grep -q "generated: 8 tokens" "$TMP/err"; then pass "complete: timing summary"; else fail "complete: timing summary" "$(cat "$TMP/err")"; fi
out2=$("$LUMEN" complete -m "$M" -p "The capital of France is" -n 8 --temp 0 --device cpu 2>/dev/null)
[ "$out" = "$out2" ] && pass "complete: greedy is deterministic" || fail "complete: deterministic" "'$out' vs '$out2'"
out3=$("$LUMEN" complete -m "$M" -p "The capital of France is" -n 8 --temp 0 --device cpu -t 1 -tb 2 2>/dev/null)
[ "$out" = "$out3" ] && pass "complete: -t 1 -tb 2 gives the same greedy text" || fail "complete: -t/-tb" "'$out' vs '$out3'"
expect_error "complete: bad -tb" "-tb 5000" "$LUMEN" complete -m "$M" -p hi -tb 5000 --device cpu
s1=$("$LUMEN" complete -m "$M" -p "Once upon a time" -n 12 --temp 0.8 --seed 7 --device cpu 2>/dev/null)
s2=$("$LUMEN" complete -m "$M" -p "Once upon a time" -n 12 --temp 0.8 --seed 7 --device cpu 2>/dev/null)
[ "$s1" = "$s2" ] && pass "complete: same seed, same sample" || fail "complete: seeded sampling" "'$s1' vs '$s2'"

expect_error "complete: context overflow" "exceeds the context size" "$LUMEN" complete -m "$M" -p "hello there" -n 100 -c 16 --device cpu
expect_error "complete: no prompt" "exactly one of -p or -f" "$LUMEN" complete -m "$M"
expect_error "complete: bad device" "device" "$LUMEN" complete -m "$M" -p hi --device tpu
expect_error "complete: bad temp" "temp" "$LUMEN" complete -m "$M" -p hi --temp warm
expect_error "complete: missing prompt file" "nope.txt: cannot open" "$LUMEN" complete -m "$M" -f "$TMP/nope.txt"
expect_error "complete: bad cache type" "cache-type" "$LUMEN" complete -m "$M" -p hi --cache-type q3_x --device cpu
expect_error "complete: vocab-only model" "no tensors" "$LUMEN" complete -m "$SHARED/tokenizer-tests/ggml-vocab-llama-spm.gguf" -p hi

ppl=$("$LUMEN" perplexity -m "$M" -f /usr/share/common-licenses/GPL-3 -c 128 --chunks 3 --device cpu 2>/dev/null)
if printf '%s' "$ppl" | grep -qE "^Final estimate: PPL = [0-9]+\.[0-9]+ \+/- [0-9.]+$"; then pass "perplexity: final estimate line"
else fail "perplexity: final estimate line" "$ppl"; fi

"$LUMEN" synth --preset tiny --type q8_0 -o "$TMP/tiny.gguf" 2>/dev/null && pass "synth: tiny q8_0" || fail "synth: tiny" "exit $?"
"$LUMEN" info -m "$TMP/tiny.gguf" | grep -q "Q8_0" && pass "synth: info reads it" || fail "synth: info" ""
"$LUMEN" quantize "$TMP/tiny.gguf" "$TMP/tiny-q4.gguf" q4_k_m 2>/dev/null && "$LUMEN" info -m "$TMP/tiny-q4.gguf" | grep -q "Q4_K" \
  && pass "quantize: q4_k_m" || fail "quantize: q4_k_m" ""
expect_error "quantize: bad type" "TYPE q9" "$LUMEN" quantize "$TMP/tiny.gguf" "$TMP/x.gguf" q9
expect_error "synth: bad preset" "unknown" "$LUMEN" synth --preset gpt5 -o "$TMP/x.gguf"

js=$("$LUMEN" bench -m "$TMP/tiny.gguf" -p 16 -n 4 -r 2 -o jsonl --device cpu 2>/dev/null)
if printf '%s\n' "$js" | python3 -c '
import json, sys
rows = [json.loads(l) for l in sys.stdin if l.strip()]
assert len(rows) == 2 and rows[0]["n_prompt"] == 16 and rows[1]["n_gen"] == 4 and all(r["avg_ts"] > 0 for r in rows)
'; then pass "bench: jsonl rows"; else fail "bench: jsonl rows" "$js"; fi
