# The CLI on the CUDA backend, run by the host emulator (lumen-simt, built next to lumen): complete,
# batch and bench take the GPU's code paths end to end on a tiny synthetic model, and greedy text
# equals the CPU's.
source "$(dirname "$0")/lib.sh"
SIMT=$(dirname "$LUMEN")/lumen-simt
[ -x "$SIMT" ] || { fail simt "lumen-simt is not built next to $LUMEN"; exit 0; }
M=$TMP/tiny.gguf
"$LUMEN" synth --preset tiny --type F16 -o "$M" >/dev/null 2>&1 || { fail simt-model "lumen synth failed"; exit 0; }

# complete: the same greedy text on both backends.
a=$("$LUMEN" complete -m "$M" -p "hello world" -n 24 --temp 0 --device cpu -t 2 2>/dev/null)
b=$("$SIMT" complete -m "$M" -p "hello world" -n 24 --temp 0 --device cuda 2>"$TMP/c.err")
if [ -n "$a" ] && [ "$a" = "$b" ]; then pass "simt complete: greedy text equals the CPU's"
else fail "simt complete: greedy text equals the CPU's" "cpu '$a' cuda '$b' ($(tail -1 "$TMP/c.err"))"; fi
grep -q "CUDA (simt emulator)" "$TMP/c.err" && pass "simt complete: runs on the CUDA backend" \
  || fail "simt complete: runs on the CUDA backend" "$(tail -1 "$TMP/c.err")"

# batch: three prompts decoded together (padded steps, graphs replayed), the same texts as the CPU's.
printf 'one two three\nthe cat sat on\nhello\n' >"$TMP/p.txt"
"$LUMEN" batch -m "$M" -f "$TMP/p.txt" -np 3 -n 16 --temp 0 --device cpu -t 2 -o "$TMP/cpu.jsonl" 2>/dev/null
"$SIMT" batch -m "$M" -f "$TMP/p.txt" -np 3 -n 16 --temp 0 --device cuda -o "$TMP/gpu.jsonl" 2>"$TMP/b.err"
if err=$(python3 -c "
import json, sys
load = lambda f: {r['id']: r['text'] for r in map(json.loads, open(f, encoding='utf-8').read().split('\n')[:-1])}
cpu, gpu = load('$TMP/cpu.jsonl'), load('$TMP/gpu.jsonl')
assert len(cpu) == 3 and cpu == gpu, (cpu, gpu)
" 2>&1); then pass "simt batch: the CPU's greedy texts"; else fail "simt batch: the CPU's greedy texts" "$(printf '%s' "$err" | tail -2)"; fi

# bench: prompt and generation timed on the CUDA backend, reported as llama-bench's JSON.
if err=$("$SIMT" bench -m "$M" -p 32 -n 8 -r 1 --device cuda -o json 2>/dev/null | python3 -c "
import json, sys
rows = json.load(sys.stdin)
assert len(rows) == 2, rows
assert all('CUDA' in r['backends'] and r['avg_ts'] > 0 for r in rows), rows
assert sorted((r['n_prompt'], r['n_gen']) for r in rows) == [(0, 8), (32, 0)], rows
" 2>&1); then pass "simt bench: pp and tg rows from the CUDA backend"; else fail "simt bench: pp and tg rows from the CUDA backend" "$(printf '%s' "$err" | tail -2)"; fi
