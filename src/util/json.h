// Minimal JSON output: string escaping and a streaming object/array writer.
#pragma once
#include <string>
#include <string_view>

namespace lumen::json {

// Escapes s as a JSON string literal (with quotes). Invalid UTF-8 bytes become U+FFFD.
std::string quote(std::string_view s);

}  // namespace lumen::json
