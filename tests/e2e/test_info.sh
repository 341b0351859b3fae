# lumen info on the test model and on bad input.
source "$(dirname "$0")/lib.sh"
M=$(test_model) || { fail info-model "cannot fetch the test model"; exit 0; }

out=$("$LUMEN" info -m "$M" 2>&1)
for want in "architecture:    llama" "layers:          30" "embedding:       576" "heads:           9 (KV heads 3" \
            "feed-forward:    1536" "vocab:           49152" "tied embeddings: yes"; do
  if printf '%s' "$out" | grep -qF "$want"; then pass "info shows '$want'"; else fail "info shows '$want'" "$out"; fi
done
js=$("$LUMEN" info -m "$M" --json --tensors)
if printf '%s' "$js" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["n_layer"]==30 and len(d["tensors"])==272' 2>/dev/null
then pass "info --json parses"; else fail "info --json parses" "$js"; fi

expect_error "info: missing file" "nonexistent.gguf: No such file" "$LUMEN" info -m "$TMP/nonexistent.gguf"
expect_error "info: no -m" "model is required" "$LUMEN" info
printf 'hello' > "$TMP/bad.gguf"
expect_error "info: not gguf" "bad.gguf: not a GGUF file" "$LUMEN" info -m "$TMP/bad.gguf"
head -c 1000000 "$M" > "$TMP/trunc.gguf"
expect_error "info: truncated" "trunc.gguf: .*(truncated|past the end)" "$LUMEN" info -m "$TMP/trunc.gguf"
expect_error "unknown subcommand" "" "$LUMEN" frobnicate
