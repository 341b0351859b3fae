# lumen tokenize: llama.cpp's test vectors through the binary, output formats, flags and bad input.
source "$(dirname "$0")/lib.sh"
V=$SHARED/tokenizer-tests
SPM=$V/ggml-vocab-llama-spm.gguf
GPT2=$V/ggml-vocab-gpt-2.gguf
[ -f "$SPM" ] || { fail tokenize-vocabs "missing $V"; exit 0; }

# Every llama.cpp test vector (no BOS, special tokens not parsed) through `--ids`.
for inp in "$V"/*.gguf.inp; do
  vocab=${inp%.inp}; name=$(basename "$vocab")
  # One file per input (NNN) beside its expected `--ids` line (NNN.want).
  python3 - "$inp" "$vocab.out" "$TMP/cases" <<'EOF'
import os, sys
raw = open(sys.argv[1], 'rb').read()
outs = open(sys.argv[2]).read().split('\n')
sep = b"\n__ggml_vocab_test__\n"
os.makedirs(sys.argv[3], exist_ok=True)
pos, i = 0, 0
while pos < len(raw):
    nxt = raw.find(sep, pos)
    end = len(raw) if nxt < 0 else nxt
    base = os.path.join(sys.argv[3], "%03d" % i)
    open(base, 'wb').write(raw[pos:end])
    open(base + ".want", 'w').write("[" + ", ".join(outs[i].split()) + "]")
    i += 1
    pos = len(raw) if nxt < 0 else nxt + len(sep)
EOF
  bad=0; n=0
  for case_file in "$TMP"/cases/[0-9][0-9][0-9]; do
    got=$("$LUMEN" tokenize -m "$vocab" -f "$case_file" --ids --no-bos --no-parse-special)
    want=$(cat "$case_file.want")
    if [ "$got" != "$want" ]; then bad=$((bad+1)); [ $bad -le 3 ] && echo "  $name $(basename "$case_file"): got $got want $want"; fi
    n=$((n+1))
  done
  rm -rf "$TMP/cases"
  if [ $bad -eq 0 ] && [ $n -gt 40 ]; then pass "tokenize: $name: $n test vectors"; else fail "tokenize: $name test vectors" "$bad of $n differ"; fi
done

# Default output: one `%6d -> 'piece'` line per token, BOS first for a SentencePiece vocab.
out=$("$LUMEN" tokenize -m "$SPM" -p "Hello world")
want=$(printf "     1 -> '<s>'\n 15043 -> ' Hello'\n  3186 -> ' world'")
[ "$out" = "$want" ] && pass "tokenize: default output format" || fail "tokenize: default output format" "$out"

ids=$("$LUMEN" tokenize -m "$SPM" -p "Hello world" --ids)
[ "$ids" = "[1, 15043, 3186]" ] && pass "tokenize: --ids with BOS" || fail "tokenize: --ids with BOS" "$ids"
ids=$("$LUMEN" tokenize -m "$SPM" -p "Hello world" --ids --no-bos)
[ "$ids" = "[15043, 3186]" ] && pass "tokenize: --no-bos" || fail "tokenize: --no-bos" "$ids"
ids=$("$LUMEN" tokenize -m "$SPM" -p "" --ids)
[ "$ids" = "[1]" ] && pass "tokenize: empty prompt is just BOS" || fail "tokenize: empty prompt" "$ids"
# GPT-2 does not ask for BOS.
ids=$("$LUMEN" tokenize -m "$GPT2" -p "Hello world" --ids)
[ "$ids" = "[15496, 995]" ] && pass "tokenize: no BOS when the vocab does not add one" || fail "tokenize: gpt-2 ids" "$ids"

out=$("$LUMEN" tokenize -m "$GPT2" -p "one two three" --show-count)
lines=$(printf '%s\n' "$out" | grep -c ' -> ')
if printf '%s\n' "$out" | tail -1 | grep -qx "Total number of tokens: $lines" && [ "$lines" -eq 3 ]; then
  pass "tokenize: --show-count"; else fail "tokenize: --show-count" "$out"; fi

# Special tokens are parsed by default; --no-parse-special spells them as text.
SC=$V/ggml-vocab-starcoder.gguf
a=$("$LUMEN" tokenize -m "$SC" -p "<fim_prefix>x" --ids)
b=$("$LUMEN" tokenize -m "$SC" -p "<fim_prefix>x" --ids --no-parse-special)
case "$a" in "[1, "*) pass "tokenize: control token parsed" ;; *) fail "tokenize: control token parsed" "$a" ;; esac
case "$b" in "[1, "*|"[1]") fail "tokenize: --no-parse-special" "$b" ;; *) pass "tokenize: --no-parse-special" ;; esac

# The same text from -p, -f and --stdin gives the same tokens.
printf 'caf\xc3\xa9 \xf0\x9f\x99\x82\n\tend' > "$TMP/t.txt"
p=$("$LUMEN" tokenize -m "$GPT2" -p "$(cat "$TMP/t.txt")" --ids)
f=$("$LUMEN" tokenize -m "$GPT2" -f "$TMP/t.txt" --ids)
s=$("$LUMEN" tokenize -m "$GPT2" --stdin --ids < "$TMP/t.txt")
[ "$p" = "$f" ] && [ "$f" = "$s" ] && pass "tokenize: -p, -f and --stdin agree" || fail "tokenize: input sources" "$p / $f / $s"

# A file's trailing newline is kept (it is a token).
printf 'x\n' > "$TMP/nl.txt"
ids=$("$LUMEN" tokenize -m "$GPT2" -f "$TMP/nl.txt" --ids)
[ "$ids" = "[87, 198]" ] && pass "tokenize: -f keeps the bytes as they are" || fail "tokenize: trailing newline" "$ids"

# With the chat model: its control tokens.
if M=$(test_model 2>/dev/null); then
  ids=$("$LUMEN" tokenize -m "$M" -p "<|im_start|>user
Hi<|im_end|>" --ids)
  case "$ids" in "[1, "*", 2]") pass "tokenize: SmolLM2 chat tokens" ;; *) fail "tokenize: SmolLM2 chat tokens" "$ids" ;; esac
else
  fail "tokenize: SmolLM2 chat tokens" "cannot fetch the test model"
fi

# Bad input.
printf 'ab\xffcd' > "$TMP/bad.txt"
expect_error "tokenize: invalid UTF-8 in a file" "bad.txt: invalid UTF-8 at byte offset 2" "$LUMEN" tokenize -m "$GPT2" -f "$TMP/bad.txt"
expect_error "tokenize: invalid UTF-8 on stdin" "standard input: invalid UTF-8 at byte offset 2" \
  sh -c "\"$LUMEN\" tokenize -m \"$GPT2\" --stdin < \"$TMP/bad.txt\""
expect_error "tokenize: invalid UTF-8 in -p" "prompt \(-p\): invalid UTF-8 at byte offset 1" "$LUMEN" tokenize -m "$GPT2" -p "$(printf 'a\xc3')"
expect_error "tokenize: no input" "exactly one of -p TEXT, -f FILE or --stdin" "$LUMEN" tokenize -m "$GPT2"
expect_error "tokenize: two inputs" "exactly one of" "$LUMEN" tokenize -m "$GPT2" -p hi -f "$TMP/t.txt"
expect_error "tokenize: missing file" "nope.txt: cannot open" "$LUMEN" tokenize -m "$GPT2" -f "$TMP/nope.txt"
expect_error "tokenize: missing model" "nonexistent.gguf" "$LUMEN" tokenize -m "$TMP/nonexistent.gguf" -p hi
expect_error "tokenize: no -m" "model is required" "$LUMEN" tokenize -p hi
