// UTF-8 decoding/encoding and the streaming decoder. The class tables live in unicode_tables.cpp.
#include "tokenizer/unicode.h"

namespace lumen::unicode {

namespace {
bool is_cont(uint8_t b) { return (b & 0xC0) == 0x80; }
}  // namespace

uint32_t decode_lenient(std::string_view s, size_t& pos) {
    const auto* p = reinterpret_cast<const uint8_t*>(s.data());
    const size_t n = s.size();
    const uint8_t b0 = p[pos];
    if (b0 < 0x80) {
        pos += 1;
        return b0;
    }
    if ((b0 & 0xE0) == 0xC0 && pos + 1 < n && is_cont(p[pos + 1])) {
        uint32_t cp = (uint32_t(b0 & 0x1F) << 6) | (p[pos + 1] & 0x3F);
        pos += 2;
        return cp;
    }
    if ((b0 & 0xF0) == 0xE0 && pos + 2 < n && is_cont(p[pos + 1]) && is_cont(p[pos + 2])) {
        uint32_t cp = (uint32_t(b0 & 0x0F) << 12) | (uint32_t(p[pos + 1] & 0x3F) << 6) | (p[pos + 2] & 0x3F);
        pos += 3;
        return cp;
    }
    if ((b0 & 0xF8) == 0xF0 && pos + 3 < n && is_cont(p[pos + 1]) && is_cont(p[pos + 2]) && is_cont(p[pos + 3])) {
        uint32_t cp = (uint32_t(b0 & 0x07) << 18) | (uint32_t(p[pos + 1] & 0x3F) << 12) |
                      (uint32_t(p[pos + 2] & 0x3F) << 6) | (p[pos + 3] & 0x3F);
        pos += 4;
        // Above U+10FFFF cannot be re-encoded; llama.cpp throws here, we substitute.
        return cp < 0x110000 ? cp : kReplacement;
    }
    pos += 1;
    return kReplacement;
}

void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
        out.push_back(char(cp));
    } else if (cp < 0x800) {
        out.push_back(char(0xC0 | (cp >> 6)));
        out.push_back(char(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        out.push_back(char(0xE0 | (cp >> 12)));
        out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(char(0x80 | (cp & 0x3F)));
    } else {
        out.push_back(char(0xF0 | (cp >> 18)));
        out.push_back(char(0x80 | ((cp >> 12) & 0x3F)));
        out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(char(0x80 | (cp & 0x3F)));
    }
}

size_t find_invalid_utf8(std::string_view s) {
    const auto* p = reinterpret_cast<const uint8_t*>(s.data());
    const size_t n = s.size();
    size_t i = 0;
    while (i < n) {
        const uint8_t b0 = p[i];
        if (b0 < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint32_t min_cp;
        uint32_t cp;
        if ((b0 & 0xE0) == 0xC0) {
            len = 2, min_cp = 0x80, cp = b0 & 0x1F;
        } else if ((b0 & 0xF0) == 0xE0) {
            len = 3, min_cp = 0x800, cp = b0 & 0x0F;
        } else if ((b0 & 0xF8) == 0xF0) {
            len = 4, min_cp = 0x10000, cp = b0 & 0x07;
        } else {
            return i;
        }
        if (i + len > n) return i;
        for (size_t k = 1; k < len; k++) {
            if (!is_cont(p[i + k])) return i;
            cp = (cp << 6) | (p[i + k] & 0x3F);
        }
        if (cp < min_cp || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
        i += len;
    }
    return std::string_view::npos;
}

size_t complete_utf8_prefix(std::string_view s) {
    const auto* p = reinterpret_cast<const uint8_t*>(s.data());
    const size_t n = s.size();
    // A character is at most 4 bytes, so only the last 3 bytes can start an unfinished one.
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        const uint8_t b = p[n - back];
        if (is_cont(b)) continue;
        size_t want = (b & 0xE0) == 0xC0 ? 2 : (b & 0xF0) == 0xE0 ? 3 : (b & 0xF8) == 0xF0 ? 4 : 1;
        return want > back ? n - back : n;
    }
    return n;
}

std::string Utf8Stream::push(std::string_view bytes) {
    pending_.append(bytes);
    size_t k = complete_utf8_prefix(pending_);
    std::string out = pending_.substr(0, k);
    pending_.erase(0, k);
    return out;
}

std::string Utf8Stream::flush() {
    std::string out;
    out.swap(pending_);
    return out;
}

}  // namespace lumen::unicode
