// Errors that reach the user. Library code throws lumen::Error with its context (file, tensor,
// flag, limit); the CLI catches it, prints "lumen: error: <what>" and exits 1.
#pragma once
#include <stdexcept>
#include <string>

namespace lumen {

struct Error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Builds the message from pieces: fail("tensor ", name, ": offset ", off, " past end").
template <class... Args>
[[noreturn]] void fail(const Args&... parts);

}  // namespace lumen

#include <sstream>
namespace lumen {
template <class... Args>
[[noreturn]] void fail(const Args&... parts) {
    std::ostringstream os;
    (os << ... << parts);
    throw Error(os.str());
}
}  // namespace lumen
