// The little the chat needs from a POSIX terminal: modes (raw for line editing, no-echo while a reply
// streams), its width, and whether colours are wanted.
#pragma once
#include <termios.h>

namespace lumen::chat::terminal {

bool is_tty(int fd);
// Colours on fd: only when it is a terminal and NO_COLOR is unset (https://no-color.org).
bool color_ok(int fd);
// Columns of the terminal on fd (80 when unknown).
int columns(int fd);

// Remembers fd's settings as they were at start-up, for restore_original(). Call once, early.
void save_original(int fd);
// Puts the saved settings back. Async-signal-safe (for a signal handler that is about to exit).
void restore_original();

// Raw mode for the line editor while it lives: bytes arrive one by one, unechoed, with Ctrl-C and
// Ctrl-D as ordinary bytes; output processing stays on. Bracketed paste is switched on too (the
// terminal then wraps pasted text in ESC[200~ ... ESC[201~), written to out_fd.
class RawMode {
public:
    RawMode(int in_fd, int out_fd);
    ~RawMode();
    RawMode(const RawMode&) = delete;
    RawMode& operator=(const RawMode&) = delete;

private:
    int in_fd_, out_fd_;
    bool active_ = false;
    termios saved_{};
};

// While a reply streams: keys typed are not echoed into the reply (they wait, unread, for the next
// prompt) and Ctrl-C still raises SIGINT.
class EchoOff {
public:
    explicit EchoOff(int fd);
    ~EchoOff();
    EchoOff(const EchoOff&) = delete;
    EchoOff& operator=(const EchoOff&) = delete;

private:
    int fd_;
    bool active_ = false;
    termios saved_{};
};

}  // namespace lumen::chat::terminal
