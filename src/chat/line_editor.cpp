#include "chat/line_editor.h"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <memory>

#include "chat/terminal.h"

namespace lumen::chat {

namespace {

constexpr int kSequenceTimeoutMs = 100;  // the rest of an escape sequence arrives at once
constexpr size_t kMaxHistory = 1000;

bool is_continuation(unsigned char c) { return (c & 0xC0) == 0x80; }
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n'; }

size_t count_code_points(std::string_view s) {
    size_t n = 0;
    for (char c : s) n += !is_continuation(static_cast<unsigned char>(c));
    return n;
}

// Columns a prompt takes: its code points, not counting ESC [ ... m colour sequences.
size_t visible_width(std::string_view s) {
    size_t n = 0;
    for (size_t i = 0; i < s.size(); i++) {
        if (s[i] == '\x1b' && i + 1 < s.size() && s[i + 1] == '[') {
            i += 2;
            while (i < s.size() && !(s[i] >= 0x40 && s[i] <= 0x7E)) i++;
            continue;
        }
        n += !is_continuation(static_cast<unsigned char>(s[i]));
    }
    return n;
}

// How one code point (its bytes) is drawn: a newline as ⏎, other control characters as '?'.
std::string_view cell(std::string_view cp) {
    if (cp.size() == 1) {
        const unsigned char c = static_cast<unsigned char>(cp[0]);
        if (c == '\n') return "\xE2\x8F\x8E";
        if (c == '\t') return " ";
        if (c < 0x20 || c == 0x7F) return "?";
    }
    return cp;
}

}  // namespace

LineEditor LineEditor::on_terminal(int in_fd, int out_fd) {
    Io io;
    io.read_byte = [in_fd](int timeout_ms) -> int {
        for (;;) {
            pollfd p{in_fd, POLLIN, 0};
            const int r = poll(&p, 1, timeout_ms);
            if (r < 0 && errno == EINTR) continue;  // e.g. SIGWINCH
            if (r == 0) return kTimeout;
            if (r < 0) return kEof;
            unsigned char c;
            const ssize_t n = ::read(in_fd, &c, 1);
            if (n == 1) return c;
            if (n < 0 && errno == EINTR) continue;
            return kEof;
        }
    };
    io.write = [out_fd](std::string_view s) {
        while (!s.empty()) {
            const ssize_t n = ::write(out_fd, s.data(), s.size());
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return;
            s.remove_prefix(size_t(n));
        }
    };
    io.columns = [out_fd] { return terminal::columns(out_fd); };
    auto raw = std::make_shared<std::unique_ptr<terminal::RawMode>>();
    io.raw_mode = [raw, in_fd, out_fd](bool on) {
        if (on) *raw = std::make_unique<terminal::RawMode>(in_fd, out_fd);
        else raw->reset();
    };
    return LineEditor(std::move(io));
}

void LineEditor::add_history(const std::string& entry) {
    if (entry.empty() || (!history_.empty() && history_.back() == entry)) return;
    history_.push_back(entry);
    if (history_.size() > kMaxHistory) history_.erase(history_.begin());
}

void LineEditor::refresh() {
    const std::string& prompt = done_lines_.empty() ? prompt_ : more_prompt_;
    const size_t cols = size_t(std::max(io_.columns ? io_.columns() : 80, 2));
    const size_t pw = visible_width(prompt);
    const size_t avail = cols > pw + 1 ? cols - pw - 1 : 1;
    const size_t cursor = count_code_points(std::string_view(buf_).substr(0, pos_));
    const size_t total = count_code_points(buf_);
    if (cursor < scroll_) scroll_ = cursor;
    if (cursor - scroll_ >= avail) scroll_ = cursor - avail + 1;
    // After a deletion, pull the text back so the row stays full.
    if (scroll_ > 0 && total + 1 < scroll_ + avail) scroll_ = total + 1 > avail ? total + 1 - avail : 0;

    std::string out = "\r" + prompt;
    size_t index = 0, shown = 0;
    for (size_t i = 0; i < buf_.size() && shown < avail;) {
        size_t len = 1;
        while (i + len < buf_.size() && is_continuation(static_cast<unsigned char>(buf_[i + len]))) len++;
        if (index >= scroll_) {
            out += cell(std::string_view(buf_).substr(i, len));
            shown++;
        }
        index++;
        i += len;
    }
    out += "\x1b[0K\r";
    const size_t col = pw + cursor - scroll_;
    if (col > 0) out += "\x1b[" + std::to_string(col) + "C";
    io_.write(out);
}

void LineEditor::insert(std::string_view s) {
    buf_.insert(pos_, s);
    pos_ += s.size();
}

void LineEditor::move_left() {
    while (pos_ > 0) {
        pos_--;
        if (!is_continuation(static_cast<unsigned char>(buf_[pos_]))) break;
    }
}

void LineEditor::move_right() {
    if (pos_ >= buf_.size()) return;
    pos_++;
    while (pos_ < buf_.size() && is_continuation(static_cast<unsigned char>(buf_[pos_]))) pos_++;
}

void LineEditor::word_left() {
    while (pos_ > 0 && is_space(buf_[pos_ - 1])) move_left();
    while (pos_ > 0 && !is_space(buf_[pos_ - 1])) move_left();
}

void LineEditor::word_right() {
    while (pos_ < buf_.size() && is_space(buf_[pos_])) move_right();
    while (pos_ < buf_.size() && !is_space(buf_[pos_])) move_right();
}

void LineEditor::erase_range(size_t from, size_t to, bool keep) {
    if (from >= to) return;
    if (keep) killed_ = buf_.substr(from, to - from);
    buf_.erase(from, to - from);
    pos_ = from;
}

void LineEditor::set_buffer(const std::string& s) {
    buf_ = s;
    pos_ = buf_.size();
}

void LineEditor::history_step(int dir) {
    const size_t next = recall_at_ + size_t(dir);  // wraps below zero, caught by the bound check
    if (next >= recall_.size()) return;
    recall_[recall_at_] = buf_;
    recall_at_ = next;
    set_buffer(recall_[recall_at_]);
}

void LineEditor::read_paste() {
    // Everything up to ESC [ 201 ~ is text. Terminals send Enter as '\r'; "\r\n" is one newline.
    bool after_cr = false;
    for (;;) {
        const int c = io_.read_byte(kSequenceTimeoutMs * 10);
        if (c == kEof || c == kTimeout) return;
        if (c == 0x1b) {
            std::string seq;
            while (seq.size() < 5) {
                const int d = io_.read_byte(kSequenceTimeoutMs);
                if (d < 0) break;
                seq += char(d);
                if (std::string_view("[201~").substr(0, seq.size()) != seq) break;
            }
            if (seq == "[201~") return;
            continue;  // a stray escape sequence inside a paste is dropped
        }
        if (c == '\n' && after_cr) { after_cr = false; continue; }
        after_cr = c == '\r';
        if (c == '\r' || c == '\n') insert("\n");
        else if (c == '\t' || c >= 0x20) insert(std::string(1, char(c)));
    }
}

bool LineEditor::read_escape(bool& paste_start) {
    paste_start = false;
    const int c = io_.read_byte(kSequenceTimeoutMs);
    if (c < 0) return false;  // a lone Escape
    if (c == 'b' || c == 'B') { word_left(); return true; }
    if (c == 'f' || c == 'F') { word_right(); return true; }
    if (c == 0x7F || c == 0x08) {  // Alt-Backspace
        const size_t end = pos_;
        word_left();
        erase_range(pos_, end, true);
        return true;
    }
    if (c == 'O') {  // SS3: Home/End and arrows in application mode
        const int d = io_.read_byte(kSequenceTimeoutMs);
        switch (d) {
            case 'H': pos_ = 0; return true;
            case 'F': pos_ = buf_.size(); return true;
            case 'C': move_right(); return true;
            case 'D': move_left(); return true;
            case 'A': history_step(-1); return true;
            case 'B': history_step(+1); return true;
            default: return false;
        }
    }
    if (c != '[') return false;
    std::string params;
    int final_byte = kTimeout;
    for (int guard = 0; guard < 16; guard++) {
        const int d = io_.read_byte(kSequenceTimeoutMs);
        if (d < 0) return false;
        if (d >= 0x40 && d <= 0x7E) { final_byte = d; break; }
        params += char(d);
    }
    const bool ctrl = params == "1;5";
    switch (final_byte) {
        case 'A': history_step(-1); return true;
        case 'B': history_step(+1); return true;
        case 'C': ctrl ? word_right() : move_right(); return true;
        case 'D': ctrl ? word_left() : move_left(); return true;
        case 'H': pos_ = 0; return true;
        case 'F': pos_ = buf_.size(); return true;
        case '~':
            if (params == "1" || params == "7") pos_ = 0;
            else if (params == "4" || params == "8") pos_ = buf_.size();
            else if (params == "3") { size_t from = pos_; move_right(); erase_range(from, pos_, false); }
            else if (params == "200") paste_start = true;
            else return false;
            return true;
        default: return false;
    }
}

LineEditor::Result LineEditor::read(const std::string& prompt, const std::string& more_prompt, std::string& text) {
    prompt_ = prompt;
    more_prompt_ = more_prompt;
    done_lines_.clear();
    set_buffer("");
    scroll_ = 0;
    recall_ = history_;
    recall_.emplace_back();
    recall_at_ = recall_.size() - 1;

    struct RawScope {
        const Io& io;
        explicit RawScope(const Io& i) : io(i) { if (io.raw_mode) io.raw_mode(true); }
        ~RawScope() { if (io.raw_mode) io.raw_mode(false); }
    } raw(io_);
    refresh();

    auto submit = [&] {
        std::string all;
        for (const std::string& l : done_lines_) all += l + "\n";
        text = all + buf_;
        io_.write("\r\n");
        return Result::Line;
    };
    for (;;) {
        const int c = io_.read_byte(-1);
        if (c == kTimeout) continue;
        if (c == kEof) {
            if (buf_.empty() && done_lines_.empty()) return Result::EndOfInput;
            return submit();
        }
        switch (c) {
            case '\r': case '\n':
                if (!buf_.empty() && buf_.back() == '\\') {
                    buf_.pop_back();
                    done_lines_.push_back(buf_);
                    set_buffer("");
                    scroll_ = 0;
                    io_.write("\r\n");
                    break;
                }
                return submit();
            case 0x03:  // Ctrl-C
                if (buf_.empty() && done_lines_.empty()) {
                    io_.write("\r\n");
                    return Result::Interrupted;
                }
                io_.write("^C\r\n");
                done_lines_.clear();
                set_buffer("");
                scroll_ = 0;
                recall_at_ = recall_.size() - 1;
                break;
            case 0x04:  // Ctrl-D
                if (buf_.empty() && done_lines_.empty()) {
                    io_.write("\r\n");
                    return Result::EndOfInput;
                }
                { size_t from = pos_; move_right(); erase_range(from, pos_, false); }
                break;
            case 0x01: pos_ = 0; break;                    // Ctrl-A
            case 0x05: pos_ = buf_.size(); break;          // Ctrl-E
            case 0x02: move_left(); break;                 // Ctrl-B
            case 0x06: move_right(); break;                // Ctrl-F
            case 0x10: history_step(-1); break;            // Ctrl-P
            case 0x0E: history_step(+1); break;            // Ctrl-N
            case 0x0B: erase_range(pos_, buf_.size(), true); break;  // Ctrl-K
            case 0x15: erase_range(0, pos_, true); break;            // Ctrl-U
            case 0x17: {                                              // Ctrl-W
                const size_t end = pos_;
                word_left();
                erase_range(pos_, end, true);
                break;
            }
            case 0x19: insert(killed_); break;             // Ctrl-Y
            case 0x0C: io_.write("\x1b[H\x1b[2J"); break;  // Ctrl-L
            case 0x7F: case 0x08: {                        // Backspace
                const size_t end = pos_;
                move_left();
                erase_range(pos_, end, false);
                break;
            }
            case 0x1b: {
                bool paste = false;
                read_escape(paste);
                if (paste) read_paste();
                break;
            }
            default:
                if (c < 0x20) break;  // other control keys do nothing
                if (c >= 0xC0) {
                    // Collect a whole UTF-8 character before showing it.
                    std::string ch(1, char(c));
                    const size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
                    while (ch.size() < need) {
                        const int d = io_.read_byte(kSequenceTimeoutMs);
                        if (d < 0 || !is_continuation(static_cast<unsigned char>(d))) break;
                        ch += char(d);
                    }
                    if (ch.size() == need) insert(ch);
                } else if (c < 0x80) {
                    insert(std::string(1, char(c)));
                }
                break;
        }
        refresh();
    }
}

}  // namespace lumen::chat
