// A small line editor for the chat prompt, on a raw-mode terminal:
//   Left/Right (Ctrl-B/F), Home/End (Ctrl-A/E), Ctrl-Left/Right and Alt-B/F by word, Backspace,
//   Delete, Ctrl-U/K kill to the start/end, Ctrl-W and Alt-Backspace kill the previous word, Ctrl-Y
//   yanks, Up/Down (Ctrl-P/N) walk the history, Ctrl-L clears the screen.
//   Enter submits; a line ending in '\' continues on the next line. Pasted text (bracketed paste)
//   is inserted as is, newlines included (shown as ⏎), so a paste never submits by itself.
//   Ctrl-C drops the input being typed, or at an empty prompt reports Interrupted; Ctrl-D at an
//   empty prompt (or the end of input) reports EndOfInput.
// The line is shown on one terminal row, scrolled sideways when it is longer than the row; every
// code point counts as one column (wide characters will misplace the cursor).
//
// The editor talks to the terminal only through Io, so tests can drive it with scripted bytes.
#pragma once
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace lumen::chat {

class LineEditor {
public:
    static constexpr int kEof = -1, kTimeout = -2;
    struct Io {
        std::function<int(int timeout_ms)> read_byte;  // a byte (0-255), kEof or kTimeout; -1 ms: wait
        std::function<void(std::string_view)> write;
        std::function<int()> columns;
        std::function<void(bool)> raw_mode;  // on while read() runs (may be empty)
    };
    enum class Result { Line, EndOfInput, Interrupted };

    explicit LineEditor(Io io) : io_(std::move(io)) {}
    // The editor on this process's terminal (in_fd, out_fd).
    static LineEditor on_terminal(int in_fd, int out_fd);

    // Reads one input; `prompt` may hold colour escapes, `more_prompt` opens continuation lines.
    Result read(const std::string& prompt, const std::string& more_prompt, std::string& text);
    // Adds an entry to the history (empty entries and repeats of the last one are skipped).
    void add_history(const std::string& entry);
    const std::vector<std::string>& history() const { return history_; }

private:
    void refresh();
    void insert(std::string_view s);
    void move_left();
    void move_right();
    void word_left();
    void word_right();
    void erase_range(size_t from, size_t to, bool keep);
    void set_buffer(const std::string& s);
    void history_step(int dir);
    bool read_escape(bool& paste_start);  // false: not a key we know
    void read_paste();

    Io io_;
    std::vector<std::string> history_;
    // State of the read in progress.
    std::string prompt_, more_prompt_;
    std::vector<std::string> done_lines_;  // lines ended with '\'
    std::string buf_;                      // the line being edited
    size_t pos_ = 0;                       // cursor, a byte offset into buf_ at a character boundary
    size_t scroll_ = 0;                    // first code point shown
    std::vector<std::string> recall_;      // history plus the current input, editable while browsing
    size_t recall_at_ = 0;
    std::string killed_;
};

}  // namespace lumen::chat
