# perplexity --kl-divergence-base / --kl-divergence: a base file written by lumen, read back
# against the same model (KLD ~0, same top 100%), and damaged or mismatched inputs.
source "$(dirname "$0")/lib.sh"
M=$(test_model) || { fail kld-model "cannot fetch the test model"; exit 0; }
T="$ROOT/prompts/gpl-3.txt"

if "$LUMEN" perplexity -m "$M" -f "$T" -c 128 --chunks 2 --device cpu --kl-divergence-base "$TMP/base.kld" \
     >"$TMP/ppl.txt" 2>/dev/null && [ "$(head -c 8 "$TMP/base.kld")" = "_logits_" ]; then
  pass "kld: perplexity writes a base file"
else fail "kld: perplexity writes a base file" "$(cat "$TMP/ppl.txt")"; fi

# Without -f (the tokens are in the file) and with it (the text's tokens are checked against them).
for with_text in no yes; do
  args=(); [ $with_text = yes ] && args=(-f "$T")
  "$LUMEN" perplexity -m "$M" --kl-divergence-base "$TMP/base.kld" --kl-divergence --device cpu "${args[@]}" \
    >"$TMP/kld.txt" 2>/dev/null
  if python3 - "$TMP/kld.txt" "$TMP/ppl.txt" <<'PY'
import re, sys
out, ppl = open(sys.argv[1]).read(), open(sys.argv[2]).read()
kld = float(re.search(r"^Mean    KLD: +(\S+) ±", out, re.M).group(1))
top = float(re.search(r"^Same top p: +(\S+) ±", out, re.M).group(1))
pq = float(re.search(r"^Mean PPL\(Q\) +: +(\S+) ±", out, re.M).group(1))
pb = float(re.search(r"^Mean PPL\(base\) +: +(\S+) ±", out, re.M).group(1))
final = float(re.search(r"Final estimate: PPL = (\S+)", ppl).group(1))
gap = float(re.search(r"^Mean ln\(vocab\) - entropy\(base\): +(\S+) ±", out, re.M).group(1))
assert abs(kld) < 1e-4, kld
assert top == 100.0, top
assert abs(pq / final - 1) < 1e-3 and abs(pb / final - 1) < 1e-3, (pq, pb, final)
assert gap > 0, gap
for label in ("Maximum KLD", "99.9%   KLD", "Median  KLD", "Minimum KLD", "RMS Δp", "Cor(ln(PPL(Q)), ln(PPL(base)))"):
    assert label in out, label
PY
  then pass "kld: same model, KLD ~0 and same top 100% (text: $with_text)"
  else fail "kld: same model (text: $with_text)" "$(cat "$TMP/kld.txt")"; fi
done

head -c -1 "$TMP/base.kld" >"$TMP/short.kld"
expect_error "kld: truncated base file" "short.kld: .*truncated" \
  "$LUMEN" perplexity -m "$M" --kl-divergence-base "$TMP/short.kld" --kl-divergence --device cpu
printf 'not a logits file at all, not at all' >"$TMP/junk.kld"
expect_error "kld: not a base file" "junk.kld: not a log-probability file" \
  "$LUMEN" perplexity -m "$M" --kl-divergence-base "$TMP/junk.kld" --kl-divergence --device cpu
expect_error "kld: another text" "token .* in the text but .* in the base file" \
  "$LUMEN" perplexity -m "$M" --kl-divergence-base "$TMP/base.kld" --kl-divergence -f "$ROOT/prompts/batch-200.txt" --device cpu
expect_error "kld: a shorter text" "code-bst.txt: [0-9]+ tokens, but the base file .* holds 256" \
  "$LUMEN" perplexity -m "$M" --kl-divergence-base "$TMP/base.kld" --kl-divergence -f "$ROOT/prompts/code-bst.txt" --device cpu
expect_error "kld: context below the file's" "-c 64: the base file .* holds chunks of 128 tokens" \
  "$LUMEN" perplexity -m "$M" --kl-divergence-base "$TMP/base.kld" --kl-divergence -c 64 --device cpu
expect_error "kld: no base file named" "--kl-divergence: needs --kl-divergence-base" \
  "$LUMEN" perplexity -m "$M" --kl-divergence --device cpu
expect_error "perplexity: no text" "-f: a text file is required" "$LUMEN" perplexity -m "$M" --device cpu
"$LUMEN" synth --preset tiny --type q8_0 -o "$TMP/tiny.gguf" 2>/dev/null
expect_error "kld: another vocabulary" "base.kld: n_vocab 49152, but the model .*tiny.gguf has [0-9]+" \
  "$LUMEN" perplexity -m "$TMP/tiny.gguf" --kl-divergence-base "$TMP/base.kld" --kl-divergence --device cpu
