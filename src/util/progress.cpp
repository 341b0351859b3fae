#include "util/progress.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>

namespace lumen {

bool stderr_is_tty() { return isatty(STDERR_FILENO) != 0; }

bool use_color() {
    const char* nc = std::getenv("NO_COLOR");
    return stderr_is_tty() && !(nc && *nc);
}

Progress::Progress(std::string label, int64_t total, std::string unit)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total > 0 ? total : 1), tty_(stderr_is_tty()),
      start_(std::chrono::steady_clock::now()), last_draw_(start_) {}

void Progress::update(int64_t done, const std::string& extra) {
    using namespace std::chrono;
    auto now = steady_clock::now();
    const int pct = int(100 * done / total_);
    const double secs = duration<double>(now - start_).count();
    const double eta = done > 0 ? secs * double(total_ - done) / double(done) : 0.0;
    if (tty_) {
        if (done != total_ && now - last_draw_ < milliseconds(100)) return;
        last_draw_ = now;
        const int width = 30, fill = int(width * done / total_);
        std::string bar(size_t(fill), '=');
        if (fill < width) bar += '>' + std::string(size_t(width - fill - 1), ' ');
        std::fprintf(stderr, "\r\033[K%s [%s] %lld/%lld%s%s  %.0fs left %s", label_.c_str(), bar.c_str(),
                     (long long)done, (long long)total_, unit_.empty() ? "" : " ", unit_.c_str(), eta, extra.c_str());
    } else {
        // Not a terminal: a line every 10%.
        if (pct / 10 == last_pct_ / 10 && done != total_) return;
        std::fprintf(stderr, "%s: %lld/%lld%s%s (%d%%) %s\n", label_.c_str(), (long long)done, (long long)total_,
                     unit_.empty() ? "" : " ", unit_.c_str(), pct, extra.c_str());
    }
    last_pct_ = pct;
    std::fflush(stderr);
}

void Progress::finish(const std::string& extra) {
    update(total_, extra);
    if (tty_) std::fputc('\n', stderr);
}

}  // namespace lumen
