#include "chat/terminal.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdlib>
#include <string_view>

namespace lumen::chat::terminal {

namespace {
termios g_original;
int g_original_fd = -1;

void write_all(int fd, std::string_view s) {
    while (!s.empty()) {
        const ssize_t n = ::write(fd, s.data(), s.size());
        if (n <= 0) return;
        s.remove_prefix(size_t(n));
    }
}
}  // namespace

bool is_tty(int fd) { return isatty(fd) != 0; }

bool color_ok(int fd) {
    const char* nc = std::getenv("NO_COLOR");
    return is_tty(fd) && !(nc && *nc);
}

int columns(int fd) {
    winsize ws{};
    if (ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
    return 80;
}

void save_original(int fd) {
    if (tcgetattr(fd, &g_original) == 0) g_original_fd = fd;
}

void restore_original() {
    if (g_original_fd >= 0) tcsetattr(g_original_fd, TCSAFLUSH, &g_original);
}

RawMode::RawMode(int in_fd, int out_fd) : in_fd_(in_fd), out_fd_(out_fd) {
    if (tcgetattr(in_fd_, &saved_) != 0) return;
    termios raw = saved_;
    raw.c_iflag &= ~tcflag_t(BRKINT | ICRNL | INPCK | ISTRIP | IXON);
    raw.c_cflag |= CS8;
    raw.c_lflag &= ~tcflag_t(ECHO | ICANON | IEXTEN | ISIG);
    raw.c_cc[VMIN] = 1;
    raw.c_cc[VTIME] = 0;
    if (tcsetattr(in_fd_, TCSADRAIN, &raw) != 0) return;
    active_ = true;
    write_all(out_fd_, "\x1b[?2004h");
}

RawMode::~RawMode() {
    if (!active_) return;
    write_all(out_fd_, "\x1b[?2004l");
    tcsetattr(in_fd_, TCSADRAIN, &saved_);
}

EchoOff::EchoOff(int fd) : fd_(fd) {
    if (tcgetattr(fd_, &saved_) != 0) return;
    termios quiet = saved_;
    quiet.c_lflag &= ~tcflag_t(ECHO);
    quiet.c_lflag |= ISIG;
    active_ = tcsetattr(fd_, TCSADRAIN, &quiet) == 0;
}

EchoOff::~EchoOff() {
    if (active_) tcsetattr(fd_, TCSADRAIN, &saved_);
}

}  // namespace lumen::chat::terminal
