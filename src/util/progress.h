// Progress on stderr: a redrawn bar on a terminal, occasional plain lines otherwise.
// Colours only on a terminal and never when NO_COLOR is set.
#pragma once
#include <chrono>
#include <string>

namespace lumen {

bool stderr_is_tty();
bool use_color();  // stderr is a terminal and NO_COLOR is unset

class Progress {
public:
    Progress(std::string label, int64_t total, std::string unit = "");
    // Sets the count done; `extra` is shown after the bar (e.g. "PPL 12.3").
    void update(int64_t done, const std::string& extra = "");
    void finish(const std::string& extra = "");

private:
    std::string label_, unit_;
    int64_t total_;
    bool tty_;
    int last_pct_ = -1;
    std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace lumen
