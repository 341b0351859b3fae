# `lumen info` on corrupted copies of the test model: each must exit 1 with one line
# "lumen: error: PATH: <what is wrong>", never crash. (The reader's full list of corruptions is
# in tests/unit/test_gguf.cpp; these check the same errors reach the user through the CLI.)
source "$(dirname "$0")/lib.sh"
M=$(test_model) || { fail gguf-errors-model "cannot fetch the test model"; exit 0; }
SIZE=$(stat -c %s "$M")
C=$TMP/corrupt.gguf

# Little-endian integer fields, read and patched in place.
read_u64() { od -An -tu8 -j"$2" -N8 "$1" | tr -d ' '; }
write_le() {  # FILE OFFSET VALUE BYTES
  local hex="" v=$3 k
  for ((k = 0; k < $4; k++)); do hex+=$(printf '\\x%02x' $((v & 255))); v=$((v >> 8)); done
  printf "$hex" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}
fresh() { cp "$M" "$C"; }

# Offsets of the first metadata entry's type and of the first tensor's info fields (walks the KVs).
read -r KV0_TYPE T0_NDIMS T0_NAME < <(python3 - "$M" <<'PY'
import struct, sys
f = open(sys.argv[1], "rb"); b = f.read(16 << 20)
size = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
def u32(p): return struct.unpack_from("<I", b, p)[0]
def u64(p): return struct.unpack_from("<Q", b, p)[0]
def value(p, t):
    if t == 8: return p + 8 + u64(p)
    if t == 9:
        et, n = u32(p), u64(p + 4); p += 12
        for _ in range(n): p = value(p, et) if et in (8, 9) else p + size[et]
        return p
    return p + size[t]
n_kv = u64(16); p = 24; kv0_type = 24 + 8 + u64(24)
for _ in range(n_kv):
    p += 8 + u64(p); t = u32(p); p = value(p + 4, t)
name = b[p + 8:p + 8 + u64(p)].decode()
print(kv0_type, p + 8 + u64(p), name)
PY
)
[ -n "${T0_NDIMS:-}" ] || { fail gguf-errors-layout "cannot walk the test model's metadata"; exit 0; }
T0_NE0=$((T0_NDIMS + 4))
N_DIMS=$(od -An -tu4 -j"$T0_NDIMS" -N4 "$M" | tr -d ' ')
T0_TYPE=$((T0_NE0 + 8 * N_DIMS))
T0_OFFSET=$((T0_TYPE + 4))

fresh; printf 'GGUX' | dd of="$C" bs=1 seek=0 conv=notrunc status=none
expect_error "gguf: bad magic" "corrupt.gguf: not a GGUF file \(bad magic\)" "$LUMEN" info -m "$C"
fresh; write_le "$C" 4 1 4
expect_error "gguf: version 1" "corrupt.gguf: GGUF version 1 is too old" "$LUMEN" info -m "$C"
fresh; write_le "$C" 4 99 4
expect_error "gguf: version 99" "corrupt.gguf: unsupported GGUF version 99" "$LUMEN" info -m "$C"
fresh; write_le "$C" 4 $((3 << 24)) 4
expect_error "gguf: big-endian" "corrupt.gguf: big-endian GGUF files are not supported" "$LUMEN" info -m "$C"
fresh; write_le "$C" 8 $((1 << 40)) 8
expect_error "gguf: absurd tensor count" "corrupt.gguf: tensor count 1099511627776 is larger than the file can hold" "$LUMEN" info -m "$C"
fresh; write_le "$C" 16 $((1 << 50)) 8
expect_error "gguf: absurd metadata count" "corrupt.gguf: metadata count 1125899906842624 is larger than the file" "$LUMEN" info -m "$C"
fresh; write_le "$C" 24 $((1 << 40)) 8
expect_error "gguf: key length past the end" "corrupt.gguf: metadata key at offset 24 has length 1099511627776, past the end" "$LUMEN" info -m "$C"
fresh; write_le "$C" "$KV0_TYPE" 13 4
expect_error "gguf: unknown value type" "corrupt.gguf: key '[a-z.]+': unknown value type 13" "$LUMEN" info -m "$C"
fresh; write_le "$C" "$T0_NDIMS" 5 4
expect_error "gguf: 5 dimensions" "corrupt.gguf: tensor '$T0_NAME' has 5 dimensions \(1 to 4 allowed\)" "$LUMEN" info -m "$C"
fresh; write_le "$C" "$T0_NE0" 0 8
expect_error "gguf: zero dimension" "corrupt.gguf: tensor '$T0_NAME': dimension 0 is 0" "$LUMEN" info -m "$C"
fresh; write_le "$C" "$T0_TYPE" 4 4
expect_error "gguf: unknown tensor type" "corrupt.gguf: tensor '$T0_NAME': unknown type id 4" "$LUMEN" info -m "$C"
fresh; write_le "$C" "$T0_OFFSET" $(( $(read_u64 "$M" "$T0_OFFSET") + 1 )) 8
expect_error "gguf: misaligned tensor" "corrupt.gguf: tensor '$T0_NAME': data offset [0-9]+ is not aligned to 32" "$LUMEN" info -m "$C"
fresh; write_le "$C" "$T0_OFFSET" $((1 << 50)) 8
expect_error "gguf: tensor offset past the end" "corrupt.gguf: tensor '$T0_NAME': data \[1125899906842624, \+[0-9]+\) runs past the end" "$LUMEN" info -m "$C"
rm -f "$C"

# Truncations: in the header, in the metadata, in the tensor table, in the tensor data.
for cut in 10 23 100 $((T0_NDIMS + 2)) $((SIZE - 1000000)); do
  head -c "$cut" "$M" > "$TMP/cut.gguf"
  expect_error "gguf: truncated to $cut bytes" "cut.gguf: .*(truncated|past the end|larger than the file)" "$LUMEN" info -m "$TMP/cut.gguf"
done
rm -f "$TMP/cut.gguf"
: > "$TMP/empty.gguf"
expect_error "gguf: empty file" "empty.gguf: empty file" "$LUMEN" info -m "$TMP/empty.gguf"
mkdir -p "$TMP/dir.gguf"
expect_error "gguf: directory" "dir.gguf: is a directory" "$LUMEN" info -m "$TMP/dir.gguf"
