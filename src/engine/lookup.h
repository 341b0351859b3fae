// Prompt-lookup decoding's drafter: the text being written often repeats text already there (a
// program being edited, a document being summarised or quoted). Find the earlier place whose
// preceding tokens match the end of the context longest (at least ngram_min tokens, looking back at
// most ngram_max), and propose the tokens that followed it there.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/speculative.h"

namespace lumen {

struct LookupParams {
    int ngram_min = 2;
    int ngram_max = 8;
};

// The lookup itself: fills `out` with up to n_max tokens that followed the best earlier match of the
// context's last tokens (empty when no n-gram of at least ngram_min tokens recurs). Among equally long
// matches the most recent wins. A match near the end may run into the context's own last tokens;
// the continuation then keeps copying from the draft as it grows (a repeating pattern repeats on).
void lookup_continuation(const std::vector<int32_t>& context, const LookupParams& p, int n_max,
                         std::vector<int32_t>& out);

class LookupDrafter : public Drafter {
public:
    explicit LookupDrafter(const LookupParams& p);
    void draft(const std::vector<int32_t>& context, int n_max, Draft& out) override;
    const char* name() const override { return "lookup"; }

private:
    LookupParams p_;
};

}  // namespace lumen
