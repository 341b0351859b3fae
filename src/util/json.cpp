#include "util/json.h"

#include <cstdio>

namespace lumen::json {

namespace {
// Length of the valid UTF-8 sequence starting at s[i], or 0 if it is not valid.
size_t utf8_len(std::string_view s, size_t i) {
    unsigned char c = s[i];
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return 0;
    for (size_t k = 1; k < n; k++)
        if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return 0;
    return n;
}
}  // namespace

std::string quote(std::string_view s) {
    std::string out = "\"";
    for (size_t i = 0; i < s.size();) {
        unsigned char c = s[i];
        switch (c) {
            case '"': out += "\\\""; i++; continue;
            case '\\': out += "\\\\"; i++; continue;
            case '\n': out += "\\n"; i++; continue;
            case '\r': out += "\\r"; i++; continue;
            case '\t': out += "\\t"; i++; continue;
            default: break;
        }
        if (c < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", c);
            out += buf;
            i++;
            continue;
        }
        size_t n = utf8_len(s, i);
        if (n == 0) { out += "\xEF\xBF\xBD"; i++; continue; }
        out.append(s.substr(i, n));
        i += n;
    }
    return out + "\"";
}

}  // namespace lumen::json
